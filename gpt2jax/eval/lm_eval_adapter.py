"""lm-evaluation-harness on our JAX scorer and KV-cache sampler: every lm-eval task on a checkpoint.

    from gpt2jax.eval.lm_eval_adapter import GPT2JaxLM, evaluate
    lm = GPT2JaxLM(config.model, params, batch_size=16)
    out = evaluate(lm, ["hellaswag", "arc_easy"], include_path="my_tasks/", limit=100)
    out["results"]["hellaswag"]["acc,none"]

`GPT2JaxLM` implements lm-eval's `LM` interface (through its `TemplateLM`, which does lm-eval's own
context/continuation encoding, `_encode_pair`, so the requests are tokenized exactly as the `hf`
backend tokenizes them):

  * `loglikelihood` -> `gpt2jax.eval.scoring.Scorer.loglikelihood` (left truncation to the model's
    context, the `hf` backend's rule; `is_greedy` as there);
  * `loglikelihood_rolling` -> `Scorer.loglikelihood_rolling` (lm-eval's disjoint rolling windows with
    EOT as the prefix token and the model's context as the window);
  * `generate_until` -> `gpt2jax.sample.generate` (the jit-compiled KV-cache loop): greedy unless the
    task asks for `do_sample` with a temperature > 0; at most `max_gen_toks` new tokens (the task's,
    else 256, as the `hf` backend); the context keeps its last `block_size - max_gen_toks` tokens; the
    text is cut at EOT and at the first of the task's `until` strings.

Text is encoded and decoded with the run's own tokenizer (`tokenizer=`, gpt2jax.tokenizer.for_checkpoint;
default GPT-2's BPE), and EOT above is its end-of-text id (GPT-2's 50256, a bytes run's 256).

The model generates the full `max_gen_toks` in one compiled scan and the text is cut afterwards, and
requests are batched by equal context length (the cache has one write position for the whole batch),
so each distinct (context length, max_gen_toks) compiles once. Fine for lm-eval's generation tasks on
GPT-2-sized models; scoring tasks (the large majority) use the bucketed scorer.

lm-eval is optional: `pip install -e '.[lm_eval]'` (or `pip install 'lm-eval[hf]'`).
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from gpt2jax.errors import LmEvalMissing, TaskDataError
from gpt2jax.eval.lm_eval_flags import DEFAULT_MAX_GEN_TOKS, define_flags  # noqa: F401  (define_flags: also here)
from gpt2jax.eval.scoring import Scorer
from gpt2jax.tokenizer import EOT_TEXT

INSTALL_HINT = (
    "lm-evaluation-harness is not installed; install it with  pip install -e '.[lm_eval]'  "
    "(or  pip install 'lm-eval[hf]')"
)

try:  # optional dependency: the module imports without it, GPT2JaxLM() then says how to install it
    from lm_eval.api.model import TemplateLM as _Base

    HAVE_LM_EVAL = True
except ImportError:  # pragma: no cover - exercised only without the extra
    _Base = object
    HAVE_LM_EVAL = False

log = logging.getLogger(__name__)


def require_lm_eval() -> None:
    if not HAVE_LM_EVAL:
        raise LmEvalMissing(INSTALL_HINT)


def _cut(text: str, stops: Sequence[str]) -> str:
    """Text before the earliest occurrence of any (non-empty) stop string."""
    end = len(text)
    for s in stops:
        if s:
            i = text.find(s)
            if i != -1:
                end = min(end, i)
    return text[:end]


class GPT2JaxLM(_Base):
    """lm-eval's LM on a GPT-2 (model config + parameters, placed where they should run).

    batch_size: sequences per scoring / generation batch (a multiple of the batch sharding's devices).
    batch_sharding: a Sharding for [batch, length] arrays (see gpt2jax.evaluate), or None.
    max_gen_toks: new tokens a generation task may ask for when it does not say.
    seed: key for sampled (do_sample) generation; greedy decoding uses none.
    tokenizer: the run's (gpt2jax.tokenizer.for_checkpoint / for_run); default GPT-2's."""

    def __init__(self, model_cfg, params, *, batch_size: int = 16, batch_sharding=None,
                 max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, seed: int = 0, progress: bool = True, tokenizer=None):
        require_lm_eval()
        super().__init__()
        from gpt2jax.tokenizer import check_vocab, get_tokenizer

        self.model_cfg = model_cfg
        self.tok = tokenizer if tokenizer is not None else get_tokenizer()
        check_vocab(self.tok, model_cfg.vocab_size)
        self.eot = int(self.tok.eot_token)
        self.scorer = Scorer(model_cfg, params, batch_size=batch_size, batch_sharding=batch_sharding,
                             progress=progress, prefix_token=self.eot)
        self.params = self.scorer.params
        self._batch_size = int(batch_size)
        self._max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        self.progress = progress
        self.generate_shapes: set[tuple[int, int]] = set()  # (context length, new tokens) batches run

    # -- what lm-eval asks of a model ----------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.eot

    @property
    def prefix_token_id(self) -> int:
        return self.eot

    @property
    def max_length(self) -> int:
        return int(self.model_cfg.block_size)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tok, "name", "gpt2"))

    def tok_encode(self, string: str, add_special_tokens=None, left_truncate_len=None, **kwargs) -> list[int]:
        """The run's tokenizer, as our built-in tasks encode (a literal '<|endoftext|>' in the text is
        encoded as text, where transformers' tokenizer would make it the EOT token)."""
        ids = self.tok.encode(string)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        ids = [int(t) for t in tokens]
        if skip_special_tokens:
            ids = [t for t in ids if t != self.eot]
        return self.tok.decode(ids)

    # -- scoring -------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """[((context, continuation), context_tokens, continuation_tokens)] -> [(ll, is_greedy)]."""
        out = self.scorer.loglikelihood([(c, x) for _, c, x in requests], desc="lm-eval loglikelihood")
        for (key, _, _), res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", key, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        strings = [req.args[0] for req in requests]
        out = self.scorer.loglikelihood_rolling([self.tok_encode(s) for s in strings], desc="lm-eval rolling")
        for s, ll in zip(strings, out):
            self.cache_hook.add_partial("loglikelihood_rolling", (s,), ll)
        return out

    # -- generation ----------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

        L = self.max_length
        eos_text = EOT_TEXT  # what GPT-2's decodes its end-of-text id to (bytes and BPE decode it to "")
        plans = []  # (context tokens, new tokens, stops, sampling (temperature, top_k, top_p) or None)
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            kw = normalize_gen_kwargs(dict(gen_kwargs or {}), self.max_gen_toks)
            stops = handle_stop_sequences(kw.pop("until", None), eos=eos_text)
            new = int(kw.pop("max_gen_toks"))
            if not 0 < new < L:
                raise ValueError(
                    f"generate_until request {i}: max_gen_toks={new} must be in [1, {L}) for a model "
                    f"with a context of {L} tokens"
                )
            ctx = self.tok_encode(context, left_truncate_len=L - new) or [self.eot]
            sampling = None
            if kw.get("do_sample") and float(kw.get("temperature", 0.0)) > 0.0:
                sampling = (float(kw["temperature"]), int(kw.get("top_k") or 0), float(kw.get("top_p") or 1.0))
            plans.append((ctx, new, stops, sampling))
        return self._generate(plans)

    def _generate(self, plans) -> list[str]:
        import jax
        from tqdm.auto import tqdm

        from gpt2jax.sample import generate

        B = self._batch_size
        groups: dict[tuple, list[int]] = {}
        for i, (ctx, new, _, sampling) in enumerate(plans):
            groups.setdefault((len(ctx), new, sampling), []).append(i)
        out = [""] * len(plans)
        bar = tqdm(total=len(plans), desc="lm-eval generate", unit="req", disable=not self.progress, leave=False)
        key = jax.random.PRNGKey(self.seed)
        for g, ((T0, new, sampling), idx) in enumerate(sorted(groups.items(), key=lambda kv: -kv[0][0])):
            for s in range(0, len(idx), B):
                rows = idx[s : s + B]
                prompt = np.asarray([plans[i][0] for i in rows], np.int32)
                if len(rows) < B:  # a fixed batch shape: pad with copies of the last row
                    prompt = np.concatenate([prompt, np.repeat(prompt[-1:], B - len(rows), 0)])
                temperature, top_k, top_p = sampling or (0.0, 0, 1.0)
                toks = generate(
                    self.model_cfg, self.params, prompt, new, key=jax.random.fold_in(key, g * 1_000_003 + s),
                    temperature=temperature, top_k=top_k, top_p=top_p,
                )
                self.generate_shapes.add((T0, new))
                toks = np.asarray(toks)[:, T0:]
                for r, i in enumerate(rows):
                    cont = toks[r].tolist()
                    if self.eot in cont:
                        cont = cont[: cont.index(self.eot)]
                    out[i] = _cut(self.tok.decode(cont), plans[i][2])
                bar.update(len(rows))
        bar.close()
        return out

    def get_model_info(self) -> dict:
        m = self.model_cfg
        return {"model": "gpt2jax", "n_layer": m.n_layer, "n_embd": m.n_embd, "n_head": m.n_head,
                "block_size": m.block_size, "dtype": m.dtype}


def make_task_manager(tasks: Sequence[str], include_path: str | None = None):
    """lm-eval's TaskManager. With an include path that defines every requested task, lm-eval's own
    task index (thousands of YAML files, ~10 s to scan) is not built."""
    from lm_eval.tasks import TaskManager

    if include_path:
        tm = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in tm.all_tasks for t in tasks):
            return tm
    tm = TaskManager(include_path=include_path or None)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        where = f"lm-eval's registry or --lm_eval_include={include_path}" if include_path else "lm-eval's registry"
        raise ValueError(f"unknown lm-eval task(s) {unknown}: not in {where}")
    return tm


def load_tasks(task_manager, tasks: Sequence[str]) -> list:
    """lm-eval Task / Group objects for `tasks` (names of tasks, groups or tags), their datasets
    loaded: a task whose data cannot be had (offline, a typo in a YAML) fails here, naming the task,
    before any model is loaded."""
    objs = []
    for name in tasks:
        try:
            loaded = task_manager.load([name])
        except Exception as e:  # lm-eval and datasets raise many types
            raise TaskDataError(
                f"lm-eval task {name!r}: cannot load it or its data ({type(e).__name__}: {e}). Registered "
                "tasks fetch their datasets from the Hugging Face hub: run where it is reachable, or with a "
                "filled HF_DATASETS_CACHE and HF_DATASETS_OFFLINE=1"
            ) from e
        if name in loaded["groups"]:
            objs.append(loaded["groups"][name])  # a group: its aggregate rows too
        else:
            objs.extend(loaded["tasks"].values())  # a task, or the tasks of a tag
    return objs


def evaluate(lm: GPT2JaxLM, tasks: Sequence, *, include_path: str | None = None, limit: int | None = None,
             num_fewshot: int | None = None, bootstrap_iters: int = 100_000, seed: int = 0,
             task_manager=None) -> dict:
    """lm-eval's `simple_evaluate` on `lm` for `tasks` (names, or objects from `load_tasks`): the
    returned dict holds lm-eval's `results` (keys like 'acc,none'), `versions`, `n-shot`,
    `higher_is_better`, `n-samples` (and `groups` when a group ran)."""
    require_lm_eval()
    from lm_eval import simple_evaluate

    tasks = [t for t in tasks if t]
    names = [t for t in tasks if isinstance(t, str)]
    tm = task_manager or make_task_manager(names, include_path)
    if names:
        tasks = load_tasks(tm, names) + [t for t in tasks if not isinstance(t, str)]
    out = simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=tm,
        limit=limit or None,
        num_fewshot=num_fewshot,
        bootstrap_iters=bootstrap_iters,
        log_samples=False,
        random_seed=seed,
        numpy_random_seed=seed + 1234,
        torch_random_seed=seed + 1234,
        fewshot_random_seed=seed + 1234,
    )
    keep = ("results", "groups", "group_subtasks", "versions", "n-shot", "higher_is_better", "n-samples")
    return {k: out[k] for k in keep if k in out}


def summary_table(lm_eval_out: dict) -> str:
    """lm-eval's own markdown table of the results."""
    from lm_eval.utils import make_table

    return make_table(lm_eval_out)


# ----------------------------------------------------------------------------------------------------
# The evaluate CLI's part (python -m gpt2jax.evaluate --lm_eval_tasks=...)


def builtin_task_names(fv) -> list[str]:
    """--tasks, which defaults to none when --lm_eval_tasks is given."""
    from gpt2jax.eval import tasks as T

    spec = fv.tasks if (fv["tasks"].present or not fv.lm_eval_tasks) else ""
    return list(T.TASKS) if spec == "all" else [t for t in spec.split(",") if t]


def cli_tasks(fv):
    """Before any model is loaded: lm-eval installed, every requested task known and its data loaded
    (or app.UsageError with the reason: one `error:` line through gpt2jax.cli). Returns (task manager, task
    objects, names)."""
    from absl import app

    names = [t for t in fv.lm_eval_tasks.split(",") if t]
    if not names:
        return None, [], []
    if not HAVE_LM_EVAL:
        raise app.UsageError(f"--lm_eval_tasks: {INSTALL_HINT}")
    if fv.lm_eval_include and not os.path.isdir(fv.lm_eval_include):
        raise app.UsageError(f"--lm_eval_include={fv.lm_eval_include}: no such directory")
    try:
        tm = make_task_manager(names, fv.lm_eval_include or None)
        return tm, load_tasks(tm, names), names
    except (ValueError, TaskDataError) as e:
        raise app.UsageError(f"--lm_eval_tasks: {e}") from None


def run_cli(fv, lm_eval_tasks, model_cfg, params, batch_sharding, batch_size, results: dict, write, *,
            tokenizer=None) -> None:
    """Run the lm-eval tasks; lm-eval's `results` go verbatim under results['results'], its other
    bookkeeping under results['lm_eval']; `write(results)` saves them. `tokenizer`: the run's."""
    import time

    lm = GPT2JaxLM(model_cfg, params, batch_size=batch_size, batch_sharding=batch_sharding,
                   max_gen_toks=fv.lm_eval_max_gen_toks, progress=fv.progress, tokenizer=tokenizer)
    t0 = time.perf_counter()
    tm, tasks, names = lm_eval_tasks
    out = evaluate(lm, tasks, task_manager=tm, limit=fv.limit or None, num_fewshot=fv.lm_eval_num_fewshot,
                   bootstrap_iters=fv.lm_eval_bootstrap_iters)
    results["results"] = out.pop("results")
    results["lm_eval"] = out
    write(results)
    print(summary_table({"results": results["results"], **out}))
    print(f"lm-eval tasks {names}: {time.perf_counter() - t0:.1f}s")
