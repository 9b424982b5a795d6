"""The Trainer: everything compiled for one config on one mesh (parameter and optimizer-state init with
their shardings, the train step with gradient accumulation and the non-finite policy, the eval step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from gpt2jax import config as config_lib
from gpt2jax import sharding as shd
from gpt2jax.data import loader
from gpt2jax.losses import lm_loss
from gpt2jax.model import GPT2, abstract_params, init_params
from gpt2jax.optim import make_optimizer, schedule


class Trainer:
    """Everything compiled for one config on one mesh: init, train step, eval step."""

    def __init__(self, config, mesh=None, validate: bool = True):
        if validate:  # train() validates once and passes validate=False
            config_lib.validate(config)
        self.config = config
        self.mesh = mesh if mesh is not None else shd.make_mesh(config.mesh)
        shd.check_batch(config, self.mesh)
        self.model = GPT2(config.model)
        self.optimizer = make_optimizer(config)
        self.lr_schedule = schedule(config.optim, config.train.num_steps)
        self.seq_len = config_lib.seq_len(config)
        self.param_sharding = shd.param_shardings(config, self.mesh)
        self.batch_sharding = shd.batch_sharding(config, self.mesh)
        self.replicated = shd.replicated(self.mesh)
        # Which rows of the global batch this process loads (its devices' rows under the batch
        # sharding): (process_index, process_count) for the loader.
        self.batch_slice = shd.process_batch_slice(
            self.batch_sharding, (config.train.batch_size, self.seq_len + 1)
        )
        shapes = abstract_params(self.model.config)  # the frozen ModelConfig, converted once (GPT2)
        self.abstract_params = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.param_sharding
        )
        opt_shapes = jax.eval_shape(self.optimizer.init, shapes)
        # Optimizer state mirrors the parameters: each parameter's moments take its sharding.
        self.opt_sharding = shd.opt_state_shardings(opt_shapes, shapes, self.param_sharding, self.mesh)
        self.abstract_opt_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), opt_shapes, self.opt_sharding
        )
        self._init_params = jax.jit(
            lambda k: init_params(self.model.config, k), out_shardings=self.param_sharding
        )
        self._init_opt = jax.jit(
            self.optimizer.init, in_shardings=(self.param_sharding,), out_shardings=self.opt_sharding
        )
        self.train_step = jax.jit(
            self._train_step,
            in_shardings=(self.param_sharding, self.opt_sharding, self.batch_sharding, self.replicated),
            out_shardings=(self.param_sharding, self.opt_sharding, self.replicated),
            donate_argnums=(0, 1),
        )
        self.eval_step = jax.jit(
            self._eval_step,
            in_shardings=(self.param_sharding, self.batch_sharding),
            out_shardings=self.replicated,
        )

    # -- state ---------------------------------------------------------------------------------
    def init_state(self, seed: int):
        params = self._init_params(jax.random.PRNGKey(seed))
        return params, self._init_opt(params)

    def init_opt_state(self, params):
        return self._init_opt(params)

    # -- steps ---------------------------------------------------------------------------------
    def _loss(self, params, batch_BT1, key):
        return lm_loss(self.model, params, batch_BT1, key, config=self.config, mesh=self.mesh)

    def _train_step(self, params, opt_state, batch_BT1, step):
        cfg = self.config
        accum = cfg.optim.accum_steps
        key = None
        if cfg.model.dropout > 0:
            key = jax.random.fold_in(jax.random.PRNGKey(cfg.train.seed), step)
        grad_fn = jax.value_and_grad(self._loss)
        if accum == 1:
            loss, grads = grad_fn(params, batch_BT1, key)
        else:
            B = batch_BT1.shape[0]
            # Row r of the global batch goes to micro-batch r % accum, so each micro-batch keeps the
            # batch dimension's sharding (every device holds B/accum/n rows of each).
            micro = batch_BT1.reshape(B // accum, accum, -1).swapaxes(0, 1)
            micro = jax.lax.with_sharding_constraint(
                micro, NamedSharding(self.mesh, P(None, *shd.batch_spec(cfg)))
            )

            def body(carry, inp):
                mb, i = inp
                k = None if key is None else jax.random.fold_in(key, i)
                loss_i, g = grad_fn(params, mb, k)
                return jax.tree.map(jnp.add, carry, (loss_i, g)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
            loss, grads = jax.tree.map(lambda a: a / accum, (loss, grads))
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = self.optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if cfg.train.nonfinite == "skip":
            # A non-finite loss or gradient leaves parameters and optimizer state (its step count
            # included) exactly as they were; the host counts and logs the skipped step.
            keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
            new_params = jax.tree.map(keep, new_params, params)
            new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        return new_params, new_opt_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite}

    def _eval_step(self, params, batch_BT1):
        return self._loss(params, batch_BT1, None)

    # -- data ----------------------------------------------------------------------------------
    def global_batch(self, local_rows: np.ndarray):
        """One global array, placed with the batch sharding, from this process's rows (those of
        `self.batch_slice`)."""
        shape = (local_rows.shape[0] * self.batch_slice[1],) + tuple(local_rows.shape[1:])
        return jax.make_array_from_process_local_data(self.batch_sharding, local_rows, shape)

    def evaluate(self, params, val: loader.TokenDataset, num_batches: int, should_stop=None) -> float | None:
        """Mean loss over `num_batches` (0: all) val batches; None if `should_stop()` turned true."""
        B = self.config.train.batch_size
        n = num_batches or loader.num_eval_batches(val, B)
        losses = []
        for i in range(n):
            if should_stop is not None and should_stop():
                return None
            rows = loader.eval_batch(val, i, B, *self.batch_slice)
            losses.append(self.eval_step(params, self.global_batch(rows)))
        return float(np.mean(jax.device_get(losses)))
