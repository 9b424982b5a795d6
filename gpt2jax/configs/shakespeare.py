"""The quickstart default: a small GPT-2 (4 layers x 256, 4 heads, the real 50257-token vocabulary,
context 64) trained on Shakespeare from scratch on a 2-core CPU.

Sized to finish `make quickstart` within 10 minutes there: 1300 steps of 8 x 64 tokens (666k tokens,
0.45 epoch), AdamW with beta2 = 0.99, the fused cross-entropy (train.loss_rows, ~9% faster per step
than dense logits here) and bf16 matmuls (model.dtype; parameters, optimizer, norms and softmax stay
fp32; ~1.2x faster per step on this CPU, which has AVX-512 BF16; docs/performance.md).
The search behind it (val loss on the tail split, each run `--config.train.loss_rows=512` or 256, the
rest as below unless said; fp32 unless said; `runs/qs_search/` in the session that made it):
  - 880 steps, lr 1e-3 (the earlier recipe):            4.765
  - 1300 steps, lr 1e-3:                                  4.634  (~11 min: over budget)
  - 1300 steps, lr 2e-3, 30 warmup steps:                 4.926
  - 1450 steps, n_embd 192, lr 1e-3:                      4.658  (9 min of training)
  - 2000 steps of 4 x 64 tokens, lr 7e-4 (min 7e-5):      4.812
  - 1150 steps, fp32 (the previous recipe):               4.6904
  - 1150 steps, bf16:                                     4.6766
  - 1150 steps, fp32, untied head: behind the tied run by 0.03 nats over its first 400 steps (stopped)
  - 1400 steps, bf16 (9 min 47 s in all: too close to the budget):        4.6165
  - 1400 steps, bf16, lr 1.4e-3:                                          4.8578
  - 1400 steps, bf16, lr 8e-4:                                            4.6078
  - 1400 steps, bf16, min_lr 0:                                           4.6225
  - 1400 steps, bf16, beta2 0.99 (instead of 0.95):                       4.4763
  (the 1400-step variants ran two at a time, one core each, so only their losses count.) beta2 = 0.99
  is the one large gain (a likely reason: with 512-token batches the squared gradients are noisy,
  and 0.95 averages them over too few steps). 1300 steps keeps a margin under 10 minutes.
Earlier: at equal tokens, 8 x 64 and 4 x 128 reached lower loss than 8 x 128, and 16 x 128 at lr 2e-3
was far behind. So on this budget the loss is bought with tokens: 1e-3 is near the best rate, and
halving the batch or narrowing the model costs more than the extra steps give. Layers are unrolled
(faster than lax.scan on the CPU at this depth). See README for the measured time and val loss.
"""

from gpt2jax.config import get_config as base


def get_config():
    c = base()
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = 4, 256, 4, 64
    c.model.scan_layers = False
    c.data.dir = "data/shakespeare"
    c.model.dtype = "bfloat16"  # matmuls; params and the loss's softmax stay fp32
    c.train.num_steps = 1300
    c.train.batch_size = 8
    c.train.loss_rows = 512  # fused cross-entropy (gpt2jax/losses.py): faster on the CPU
    c.train.log_every = 20
    c.train.eval_every = 0  # only at the end: the whole val split (78k tokens)
    c.train.eval_batches = 0
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    c.optim.warmup_steps = 20
    c.optim.b2 = 0.99  # the search above: 0.95 (GPT-3's) is much worse at this batch size
    c.checkpoint.every = 0  # at the end (and on SIGTERM/SIGINT)
    c.checkpoint.keep = 1
    return c
