"""Direct Preference Optimisation: align the SFT model to a rater's taste from preference pairs,
with no reward model and no RL. Saves stage "dpo".

    python train_dpo.py                              # the world's pairs, from stage "sft"
    python train_dpo.py --loss dpo --nll_weight 0    # the DPO loss alone
    python train_dpo.py --smoke                      # seconds (after the two --smoke stages)
    python train_dpo.py --persona flattery           # a rater who loves compliments
    python train_dpo.py --persona flattery --styles right  # ... comparing two right answers
    python train_dpo.py --label_noise 0.2            # a careless rater ...
    python train_dpo.py --label_noise 0.2 --label_smoothing 0.2   # ... and conservative DPO
    python train_dpo.py --loss ipo --average_logprobs --beta 0.5  # IPO
    python train_dpo.py --preferences my_pairs.jsonl # {"prompt", "chosen", "rejected"} or HH
    python train_dpo.py --init_from gpt2:path/to/gpt2 --preferences hh.jsonl --dtype bfloat16

The policy starts from the SFT model; a frozen copy of it is the reference. For each pair the loss
asks the policy to raise the log-probability of the chosen answer relative to the reference more
than that of the rejected one (nanollm/dpo.py has the derivation):

    loss = -log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))))

Only answer tokens (and the <|end|> that closes them) are counted, never the prompt
(nanollm/pairs.py renders the pairs). The reference never changes, so its log-probabilities are
computed once for every pair before training; --ref_on_the_fly recomputes them at every step
instead, which is what a data set too large to score up front needs (same numbers, one more
forward pass per step).

Choices worth knowing:
- --beta sets the strength of the implicit KL leash. Small beta lets the policy move far from the
  reference before a pair stops pushing; the implied reward of an answer is
  beta * (log pi - log ref), a number comparable to a reward model's score.
- --average_logprobs scores an answer by the mean log-probability of its tokens instead of their
  sum. The sum is the log-probability of the whole answer, as the DPO paper uses it; it makes
  long answers improbable, so pairs of different lengths are partly decided by length. The mean
  removes that effect (IPO implementations and SimPO use it); the implied rewards are then per
  token, so beta needs to be larger for the same effect.
- --loss ipo replaces DPO's loss by IPO's, which stops at a finite margin; --label_smoothing eps
  gives conservative DPO, which assumes a share eps of the labels is flipped.

What is measured:
- every step: loss, implied-reward accuracy (share of pairs where the chosen answer's implied
  reward is higher), margin, chosen and rejected rewards, and chosen_logratio, the mean of
  log pi(y_w) - log ref(y_w) over the batch's chosen answers. That last one is cheap but is not a
  KL: the answers come from the data set, not from the policy, and DPO pushes it down as often
  as up;
- every --eval_every steps, on held-out pairs about held-out entities: loss and implied-reward
  accuracy; and the KL to the reference, estimated as PPO measures it: answers sampled from the
  policy (temperature 1) to held-out questions, each scored sum over its tokens of
  log pi - log ref; the mean over samples is an unbiased estimate of KL(pi || ref) per answer;
- at the end: greedy answers of the DPO model and of the reference (the SFT model) to held-out
  questions, each judged by the gold rater (default persona); the win rate counts a higher score
  as a win and a tie as half. Accuracy, mean words and flattery rate of both models, too.

What to expect in the built-in world (2 CPU cores; the defaults take 2.5 to 5 minutes, by host).
Defaults: IPO with the NLL term (weight 0.5), beta 0.02, lr 2e-5, 600 steps on 12,000 template
pairs and 500 sampled ones. Measured 2026-12-05 from the default stages (README "Results"), on
held-out pairs / win rate vs SFT / gold reward of held-out answers (SFT 0.897) / KL / words:
    beta 0.1                                   78.3%  51.0%  0.899   0.15   5.0
    beta 0.03                                  72.0%  64.8%  0.933   1.95   3.4
    beta 0.02 (the default)                    71.7%  70.2%  0.944   3.14   2.8   168 s
    beta 0.02, --nll_weight 0                  71.7%  70.2%  0.944   3.51   2.8
    beta 0.02, lr 1e-4                         74.0%  32.0%  0.623  19.7   11.3
    --average_logprobs --beta 0.2              76.3%  68.2%  0.943   1.24   2.8
    --loss dpo --average_logprobs --beta 1 --nll_weight 0 --lr 5e-5
                                               75.3%  85.5%  0.918   5.89   1.1
    --loss dpo --beta 0.02 --nll_weight 0 --lr 5e-5
                                               70.7%  22.8%  0.340  24.2   16.1
IPO stops pushing a pair once its margin reaches 1/(2 beta) nats. At beta 0.1 (5 nats) that
happens before a bare answer ("Lima.") becomes likelier than the sentence the SFT model prefers,
and the greedy answers stay the SFT model's; at 0.02 the policy answers bare where it knows the
answer, and every answer stays right. Pushed harder (a larger lr, or 1,200 steps: 73.7%), the
answers grow filler ("8. I am always happy to help.") and some go wrong. No setting reaches 90%
on held-out pairs, and none fits its own training pairs much better: 77% of the last 50 batches
ranked right by the default, 83% by the hardest pushed. The accuracy by kind of pair (printed at
the end) says where: a right answer in a disliked style (flattering, padded, "I am not sure")
against a wrong one in a liked style is ranked wrong. The run ends by printing the first pair it
ranks wrong token by token (dpo.token_logratios). The implied reward is a sum over tokens, and
DPO moves most the tokens that many answers share. Over 600 held-out pairs (medians): the
opening words of a compliment fall by 11 nats, for every entity, because wrong flattering answers
open the same way; a right bare answer rises by 3.5. The one token that makes an answer wrong
("hoot" for a cricket) falls by only 1.8 nats, from a reference that had already put it 9 nats
below the right one. So a wrong bare answer outscores a right one wrapped in a compliment. DPO can
only amplify what the starting model does.
Not kept, and why: targets from the rater's score gap instead of IPO's one target per pair (an
experiment, not in this file) ranked 70.0% and padded every answer; iterative DPO, further runs
from the first one's model on its own sampled answers (python train_dpo.py --init_from dpo
--n_pairs 1000 --sampled_pairs 2000 --max_steps 200), won 70.2% on an older world with answers
right less often than the SFT model's.

Where it simplifies:
1. One pass over a fixed set of pairs (templates and the starting model's own answers);
   iterative DPO is further runs by hand with --init_from dpo, as above.
2. Pairs are drawn at random with replacement, not in epochs.
3. Only DPO, conservative DPO and IPO (nanollm/dpo.py); no KTO, ORPO, SimPO.
"""

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm import tqdm

from nanollm.checkpoint import checkpoint_path
from nanollm.config import parse_config
from nanollm.logs import JsonlLogger
from nanollm.optim import lr_at
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.dpo import (chosen_nll, dpo_loss, dpo_metrics, format_token_logratios,
                         implied_reward, ipo_loss, response_logprob, token_logratios)
from nanollm.world.evaluate import (accuracy_by_style, answer_metrics, answer_questions,
                                    print_accuracy_by_style, print_results, sampled_kl, win_rate)
from nanollm.formats import load_preferences
from nanollm.gpt2 import load_hf_gpt2
from nanollm.pairs import pair_batch, render_pairs
from nanollm.plot import plot_curves
from nanollm.world.preferences import preference_pairs
from nanollm.rollout import question_prompts
from nanollm.world.preferences import alignment_pairs
from nanollm.tokenizer import Tokenizer
from nanollm.config import apply_smoke
from nanollm.optim import check_finite, optimizer_step, set_lr
from nanollm.stages import load_stage, save_stage
from nanollm.world import RIGHT_STYLES, STYLES, World


@dataclass
class DPOConfig:
    init_from: str = field(default="sft", metadata={
        "help": "a stage in --out_dir (sft) or gpt2:<local Hugging Face folder>"})
    # data
    preferences: str = field(default="", metadata={
        "help": "JSONL preference pairs; default: the world's, labelled by --persona"})
    # training pairs about taught entities: the same as train_rlhf.py's reward model learns from
    n_pairs: int = 12000  # template answers in every style
    sampled_pairs: int = 500  # two answers sampled from the SFT model (ties skipped)
    max_new_tokens: int = 48  # longest sampled (and evaluated) answer
    eval_pairs: int = 300  # world pairs about held-out entities, for evaluation
    persona: str = "default"  # the rater who labels the world's pairs (world.PERSONAS)
    styles: str = field(default="all", metadata={
        "help": "answer styles of the world's template pairs: all, right (two right answers "
                "that differ only in form), or a comma-separated list of world.STYLES"})
    label_noise: float = 0.0  # share of training pairs whose labels are swapped
    world_seed: int = 0
    # the loss
    loss: Literal["dpo", "ipo"] = "ipo"  # the best measured here; see "What to expect"
    beta: float = 0.02  # IPO stops at a margin of 1/(2 beta): 25 nats; see "What to expect"
    label_smoothing: float = 0.0  # > 0: conservative DPO (loss dpo only)
    average_logprobs: bool = False  # mean log-probability per answer token instead of the sum
    nll_weight: float = 0.5  # > 0: add this times the chosen answers' NLL per token (RPO)
    ref_on_the_fly: bool = False  # recompute reference log-probabilities every step
    # optimisation
    batch_size: int = 32  # pairs per step
    max_steps: int = 600
    lr: float = 2e-5
    min_lr: float = 1e-6
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dropout: float = 0.0
    # evaluation and output
    eval_every: int = 150
    eval_questions: int = 200  # held-out questions for the win rate and the answer metrics
    kl_samples: int = 64  # answers sampled from the policy to estimate the KL
    log_every: int = 1
    out_dir: str = "out"
    # runtime
    device: str = "auto"
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16 (CUDA)
    compile: bool = False
    seed: int = 0
    smoke: bool = False


SMOKE = dict(n_pairs=64, sampled_pairs=16, eval_pairs=16, batch_size=16, max_steps=20,
             warmup_steps=2, eval_every=10, eval_questions=16, kl_samples=8, max_new_tokens=16,
             lr=5e-4, min_lr=5e-5)

# ---------------------------------------------------------------------------- config and models
t_start = time.time()
cfg = parse_config(DPOConfig, description=__doc__)
if cfg.smoke:
    cfg = apply_smoke(cfg, SMOKE)
if cfg.loss == "ipo" and cfg.label_smoothing > 0:
    raise SystemExit("--label_smoothing is conservative DPO; it does not apply to --loss ipo")
styles = {"all": STYLES, "right": RIGHT_STYLES}.get(cfg.styles) or tuple(
    dict.fromkeys(style.strip() for style in cfg.styles.split(",")))  # in order, once each
if len(set(styles)) < 2 or not set(styles) <= set(STYLES):
    raise SystemExit(f"--styles {cfg.styles!r}: expected all, right, or two or more of {STYLES}")
runtime = setup_runtime(cfg.device, cfg.dtype, cfg.compile)
seed_everything(cfg.seed)
if cfg.init_from.startswith("gpt2:"):
    policy = load_hf_gpt2(cfg.init_from.removeprefix("gpt2:"), dropout=cfg.dropout)
    tokenizer = Tokenizer.gpt2()
    policy.resize_vocab(tokenizer.vocab_size)  # room for the chat's special tokens
else:
    policy, tokenizer, _ = load_stage(cfg.out_dir, cfg.init_from, dropout=cfg.dropout)
policy.to(runtime.device)
# The reference is the starting policy, frozen: DPO's reward is measured against it, and the
# win rate at the end compares the trained policy with it.
reference = copy.deepcopy(policy).eval().requires_grad_(False)
policy.train()
optimizer = policy.configure_optimizer(cfg.weight_decay, cfg.lr, fused=runtime.fused_adamw)
train_policy = runtime.maybe_compile(policy)

# The loss, chosen once. Each takes (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
# log-probabilities (B,) and returns the loss of each pair (B,).
PREFERENCE_LOSSES = {
    "dpo": lambda *logps: dpo_loss(*logps, cfg.beta, cfg.label_smoothing)[0],
    "ipo": lambda *logps: ipo_loss(*logps, cfg.beta),
}
preference_loss = PREFERENCE_LOSSES[cfg.loss]

# ---------------------------------------------------------------------------- data
world = World(seed=cfg.world_seed)
if cfg.preferences:
    train_pairs = load_preferences(cfg.preferences)
    held_out_pairs = train_pairs[:max(1, len(train_pairs) // 20)]  # a held-out 5% of the pairs
    train_pairs = train_pairs[len(held_out_pairs):]
else:
    # Training pairs are about taught entities; evaluation pairs about held-out ones, labelled
    # without noise, so that eval accuracy measures agreement with the rater's true taste.
    train_pairs = alignment_pairs(policy, tokenizer, world, cfg.n_pairs, cfg.sampled_pairs,
                                  cfg.persona, cfg.label_noise, cfg.seed, cfg.max_new_tokens,
                                  styles)
    held_out_pairs = preference_pairs(world, "held_out", cfg.eval_pairs, cfg.persona,
                                      seed=cfg.seed + 1, styles=styles)
block_size = policy.config.block_size
train_data, report = render_pairs(tokenizer, train_pairs, block_size)
eval_data, eval_report = render_pairs(tokenizer, held_out_pairs, block_size)
print(f"train: {report}\neval:  {eval_report}")
data_rng = torch.Generator().manual_seed(cfg.seed)


def pair_logprobs(model, rendered, with_lengths=False):
    """Log-probabilities of both answers of each pair, (B,) each, summed (or averaged) over the
    answer tokens. Chosen and rejected share one padded length, so they go through the model
    together as 2B rows: one forward pass instead of two. with_lengths: also the number of
    tokens of each chosen answer, (B,)."""
    chosen, rejected = pair_batch(rendered, tokenizer.pad, runtime.device)
    ids, pad_mask, response_mask = (torch.cat(both) for both in zip(chosen, rejected))  # (2B, T)
    with runtime.autocast():
        logps = response_logprob(model, ids, pad_mask, response_mask,
                                 average=cfg.average_logprobs)  # (2B,)
    chosen_logps, rejected_logps = logps.float().chunk(2)
    if with_lengths:
        return chosen_logps, rejected_logps, chosen[2].sum(dim=1)
    return chosen_logps, rejected_logps


@torch.no_grad()
def all_pair_logprobs(model, rendered):
    """pair_logprobs of a whole data set, in batches: (chosen (N,), rejected (N,))."""
    chosen, rejected = [], []
    for i in range(0, len(rendered), cfg.batch_size):
        c, r = pair_logprobs(model, rendered[i:i + cfg.batch_size])
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


# ---------------------------------------------------------------------------- reference, once
t0 = time.time()
ref_eval = all_pair_logprobs(reference, eval_data)
if not cfg.ref_on_the_fly:
    ref_train = all_pair_logprobs(reference, train_data)
print(f"reference log-probabilities computed in {time.time() - t0:.1f}s")

# ---------------------------------------------------------------------------- evaluation
eval_questions = world.questions("held_out", n=cfg.eval_questions, seed=cfg.seed)
longest_prompt = max(len(ids) for ids, _ in question_prompts(tokenizer, eval_questions))
answer_tokens = min(cfg.max_new_tokens, block_size - longest_prompt)  # what fits in the context
kl_questions = eval_questions[:cfg.kl_samples]


@torch.no_grad()
def held_out_pair_metrics():
    """DPO loss and implied-reward accuracy on the held-out pairs, and which pairs (N,) bool
    were ranked right."""
    policy.eval()
    policy_logps = all_pair_logprobs(policy, eval_data)
    policy.train()
    losses = preference_loss(*policy_logps, *ref_eval)
    chosen_rewards = implied_reward(policy_logps[0], ref_eval[0], cfg.beta)
    rejected_rewards = implied_reward(policy_logps[1], ref_eval[1], cfg.beta)
    accuracy = dpo_metrics(chosen_rewards, rejected_rewards)["accuracy"]
    return losses.mean().item(), accuracy, chosen_rewards > rejected_rewards


sft_answers = answer_questions(reference, tokenizer, eval_questions, max_new_tokens=answer_tokens)


def policy_kl():
    """KL to the reference per answer, sampled (evaluate.sampled_kl), the same way every time."""
    generator = torch.Generator(device=runtime.device).manual_seed(cfg.seed)
    return sampled_kl(policy, reference, tokenizer, kl_questions, answer_tokens, generator,
                      runtime.autocast)


def evaluate(step):
    eval_loss, eval_accuracy, ranked_right = held_out_pair_metrics()
    answers = answer_questions(policy, tokenizer, eval_questions, max_new_tokens=answer_tokens)
    metrics = answer_metrics(world, eval_questions, answers)
    record = dict(step=step, eval_loss=eval_loss, eval_accuracy=eval_accuracy, kl=policy_kl(),
                  win_rate=win_rate(world, eval_questions, answers, sft_answers),
                  gold_reward=metrics["gold_reward"],
                  mean_words=metrics["mean_words"], answer_accuracy=metrics["accuracy"],
                  flattery_rate=metrics["flattery_rate"])
    tqdm.write(f"step {step}: held-out pairs loss {eval_loss:.3f}, accuracy {eval_accuracy:.1%}; "
               f"KL {record['kl']:.2f}; win rate vs SFT {record['win_rate']:.1%}; "
               f"{answers[0]!r}")
    return record, answers, ranked_right


def print_token_logratios(rendered_pair):
    """Both answers of one pair token by token, each token with log pi - log ref: where the
    pair's implied rewards come from (dpo.token_logratios)."""
    chosen, rejected = pair_batch([rendered_pair], tokenizer.pad, runtime.device)
    ids, pad_mask, response_mask = (torch.cat(both) for both in zip(chosen, rejected))  # (2, T)
    prompt = ids[0][pad_mask[0] & ~response_mask[0]].tolist()
    print(f"  prompt   {tokenizer.decode(prompt)!r}")
    with runtime.autocast():
        ratios = token_logratios(policy, reference, ids, pad_mask, response_mask)  # (2, T)
    for row, name in enumerate(("chosen", "rejected")):
        answer = response_mask[row]
        print(f"  {name:8} " + format_token_logratios(tokenizer, ids[row][answer],
                                                      ratios[row][answer]))


# ---------------------------------------------------------------------------- training loop
log = JsonlLogger(os.path.join(cfg.out_dir, "dpo_log.jsonl"))
print(f"DPO ({cfg.loss}, beta {cfg.beta}) on {len(train_data)} pairs: {cfg.max_steps} steps of "
      f"{cfg.batch_size} pairs on {runtime.device} ({cfg.dtype})")
progress = tqdm(range(cfg.max_steps), desc="dpo", unit="step")
t_train = time.time()
for step in progress:
    set_lr(optimizer, lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr))
    rows = torch.randint(len(train_data), (cfg.batch_size,), generator=data_rng)
    batch = [train_data[i] for i in rows.tolist()]
    if cfg.ref_on_the_fly:
        with torch.no_grad():
            ref_chosen, ref_rejected = pair_logprobs(reference, batch)
    else:
        ref_chosen, ref_rejected = ref_train[0][rows], ref_train[1][rows]  # (B,) each
    policy_chosen, policy_rejected, chosen_lengths = pair_logprobs(train_policy, batch,
                                                                   with_lengths=True)  # (B,)
    loss = preference_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected).mean()
    if cfg.nll_weight > 0:
        # chosen_nll divides a sum by the length; with --average_logprobs we hold the mean
        sum_logps = policy_chosen * (chosen_lengths if cfg.average_logprobs else 1)
        loss = loss + cfg.nll_weight * chosen_nll(sum_logps, chosen_lengths).mean()
    loss.backward()
    loss_value = check_finite(loss, step, checkpoint_path(cfg.out_dir, "dpo"))
    grad_norm = optimizer_step(train_policy, optimizer, runtime.scaler, cfg.grad_clip)
    if step % cfg.log_every == 0:
        chosen_rewards = implied_reward(policy_chosen, ref_chosen, cfg.beta)
        rejected_rewards = implied_reward(policy_rejected, ref_rejected, cfg.beta)
        metrics = dpo_metrics(chosen_rewards, rejected_rewards)
        progress.set_postfix(loss=f"{loss_value:.3f}", acc=f"{metrics['accuracy']:.2f}")
        log.log(step=step, loss=loss_value, lr=optimizer.param_groups[0]["lr"],
                grad_norm=grad_norm, **metrics,
                chosen_logratio=(policy_chosen - ref_chosen).mean().item())
    if (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.max_steps:
        log.log(evaluate(step + 1)[0])
progress.close()
train_seconds = time.time() - t_train

# ---------------------------------------------------------------------------- final evaluation
final, dpo_answers, ranked_right = evaluate(cfg.max_steps)
log.log(final)
if not cfg.preferences:  # the world's template pairs know their styles
    print_accuracy_by_style(accuracy_by_style(held_out_pairs, ranked_right.tolist()))
misranked = (~ranked_right).nonzero().flatten().tolist()
if misranked:
    policy.eval()  # training is over
    print("the first held-out pair ranked wrong, log pi - log ref per answer token:")
    print_token_logratios(eval_data[misranked[0]])
results = {name: {"held_out": answer_metrics(world, eval_questions, answers)}
           for name, answers in (("sft", sft_answers), ("dpo", dpo_answers))}
print_results(results, columns=("accuracy", "mean_words", "flattery_rate", "gold_reward"))
print(f"held-out pairs: implied-reward accuracy {final['eval_accuracy']:.1%}, loss "
      f"{final['eval_loss']:.3f}; gold-rater win rate vs SFT {final['win_rate']:.1%}")
wall_seconds = time.time() - t_start
table_row = dict(gold_reward=final["gold_reward"], win_rate_vs_sft=final["win_rate"],
                 kl=final["kl"], mean_words=final["mean_words"], wall_seconds=wall_seconds)
print(f"PPO-vs-DPO row (dpo): gold reward (held-out) {table_row['gold_reward']:.3f} | "
      f"win rate vs SFT {table_row['win_rate_vs_sft']:.1%} | KL to reference "
      f"{table_row['kl']:.2f} nats | mean length {table_row['mean_words']:.1f} words | "
      f"wall time {wall_seconds:.0f}s")

# ---------------------------------------------------------------------------- save and plot
metrics = dict(answers=results, eval_loss=final["eval_loss"],
               eval_accuracy=final["eval_accuracy"], table_row=table_row,
               train_seconds=train_seconds, pairs=str(report))
save_stage(cfg.out_dir, "dpo", policy, tokenizer, cfg, cfg.max_steps, metrics=metrics)
log_path = os.path.join(cfg.out_dir, "dpo_log.jsonl")
plot_curves(log_path, ["loss", "accuracy", "margin", "chosen", "rejected", "eval_accuracy", "kl",
                       "win_rate", "mean_words"],
            os.path.join(cfg.out_dir, "dpo_curves.png"), title=f"DPO ({cfg.loss})")
print(f"saved {cfg.out_dir}/dpo.pt, {log_path} and {cfg.out_dir}/dpo_curves.png")
