"""RLHF in two acts: train a reward model on preference pairs (stage "reward"), then tune the SFT
model against it with PPO (stage "rlhf").

    python train_rlhf.py                              # both acts on the world, from out/sft.pt
    python train_rlhf.py --smoke                      # seconds (after the --smoke SFT)
    python train_rlhf.py --acts ppo --beta 0 --ppo_iters 60   # reuse out/reward.pt
    python train_rlhf.py --reward_persona length --sft_dir out --out_dir out/length_rm
    python train_rlhf.py --preferences my_pairs.jsonl # {"prompt", "chosen", "rejected"} or HH

Act 1, the reward model. Two answers to one question, one of them preferred by a rater persona
(nanollm/rater.py: by default correct and concise wins), are rendered with the chat template. The
answers are the world's templates (every style, right and wrong) and pairs of the SFT model's own
samples, the answers PPO will start from (InstructGPT's labellers compared model samples too).
The SFT trunk with a scalar head reads the answer's last token (its <|end|>), is trained with the
Bradley-Terry loss (nanollm/reward.py) and measured on pairs about held-out entities. The reward
adds each answer token's log-likelihood times a learned weight (reward.token_rewards; off with
--rm_likelihood false: a plain last-token reward model).

Act 2, PPO (the maths in nanollm/ppo.py, one iteration written out in its docstring). Four models:
    policy     the SFT model, trained;
    reference  a frozen copy of the SFT model: the KL penalty measures the policy's drift from it;
    reward     the reward model of act 1, frozen: the proxy reward;
    critic     the value function, a separate GPT initialised from the reward model.
The critic shares no trunk with the policy. InstructGPT made this choice: with a shared trunk the
value loss and the policy loss pull the same weights in different directions and need a
carefully tuned weighting; initialised from the reward model, the critic starts out already
predicting the reward. The price is a second model in memory, nothing at this size.

The KL leash, two ways:
1. In the reward (the default, InstructGPT): every answer token pays -beta * k1, where
   k1 = log pi(token) - log pi_ref(token). k1 is an unbiased estimate of the KL from tokens the
   policy sampled; it is negative for about half of them, which does not matter in a reward,
   where only its sum over an answer counts (the log-ratio of the whole answer).
2. In the loss (--kl_in_loss, as GRPO does): the reward is the score alone, and the loss gets
   beta * mean(k3), where k3 = (r - 1) - log r, r = pi_ref / pi. k3 is also unbiased, never
   negative, and much less noisy when the two models are close, which suits a loss term whose
   gradient is followed token by token.
beta is fixed, or adapted after every iteration so that the KL tracks --target_kl (Ziegler et al.).

What it shows: PPO raises the reward model's score (proxy reward); the world's default rater
judges whether the answers got better (gold reward), on held-out questions. The gold reward can
only rise where the reward model is right: act 1 prints its held-out accuracy by kind of pair, and
PPO answers bare only in the families where the reward model can tell a bare answer is right.
With no leash (--beta 0) the policy may go as far as the reward model's mistakes allow: the
default one held for 60 iterations, a weaker one was hacked with bare wrong answers. A flawed
persona (--reward_persona length --beta 0) shows reward hacking (Gao et al. 2022) plainly: proxy
up, gold down (out/rlhf_curves.png, out/rlhf_reward_vs_kl.png; figures in README "Results").

Where it simplifies compared with InstructGPT and production trainers:
1. One prompt, one answer per row; no pretraining-gradient mix (PPO-ptx); no entropy bonus.
2. The reward model is normalised on its training answers (mean 0, std 1), not on demonstrations.
3. One process, no torch.compile and no resuming: a run takes minutes (Ctrl-C still saves).
4. With --preferences, PPO's prompts are the file's prompts; no gold rater can judge those
   answers, so only the proxy reward and the KL are reported.
"""

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
from tqdm import tqdm

from nanollm.checkpoint import checkpoint_path
from nanollm.config import parse_config
from nanollm.logs import JsonlLogger
from nanollm.optim import lr_at
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.world.evaluate import (accuracy_by_style, answer_metrics, print_accuracy_by_style,
                                    print_results)
from nanollm.formats import load_preferences
from nanollm.logprobs import sequence_logprobs
from nanollm.pairs import render_pairs
from nanollm.plot import plot_curves, plot_reward_vs_kl
from nanollm.ppo import (AdaptiveKLController, FixedKLController, gae, kl_k3, kl_penalised_rewards,
                         masked_mean, ppo_clip_loss, state_values, value_loss, whiten)
from nanollm.world.preferences import preference_pairs
from nanollm.reward import (bradley_terry_loss, normalise_reward_head, pair_sequence_rewards,
                            pair_sequence_scores, preference_accuracy)
from nanollm.rollout import (greedy_answers, pair_prompts, prompts_that_fit, question_prompts,
                             response_texts, rollout)
from nanollm.world.preferences import alignment_pairs
from nanollm.config import apply_smoke
from nanollm.optim import check_finite, optimizer_step, set_lr
from nanollm.stages import load_stage, save_stage
from nanollm.world import World


@dataclass
class RLHFConfig:
    acts: Literal["both", "reward", "ppo"] = field(default="both", metadata={
        "help": "run act 1 (reward model), act 2 (PPO, loading the saved reward model) or both"})
    sft_dir: str = field(default="", metadata={"help": "folder holding sft.pt (default: out_dir)"})
    # preference data
    preferences: str = field(default="", metadata={
        "help": "JSONL preference pairs; default: the world's, labelled by --reward_persona"})
    reward_persona: Literal["default", "flattery", "length"] = field(default="default", metadata={
        "help": "the rater who labels the reward model's pairs; the gold rater is always default"})
    label_noise: float = 0.0  # share of training pairs whose labels are swapped
    n_pairs: int = 12000  # training pairs of template answers (taught entities)
    sampled_pairs: int = 500  # training pairs of two answers sampled from the SFT model
    val_pairs: int = 2000  # held-out pairs (held-out entities); 500 would give +-2 points
    world_seed: int = 0
    # act 1: the reward model
    rm_steps: int = 1500  # held-out pairs ranked right: 94.8% after 1,000 steps, 96.2% after 1,500
    rm_batch_size: int = 32  # pairs per step
    rm_lr: float = 1e-4
    rm_warmup_steps: int = 20
    rm_eval_every: int = 250
    rm_likelihood: bool = True  # add w_t * log p(token t) to the score (reward.token_rewards)
    # act 2: PPO
    ppo_iters: int = 20  # --ppo_iters 60 shows the proxy running away from the gold reward
    rollout_batch: int = 64  # prompts answered per iteration
    max_new_tokens: int = 48
    ppo_epochs: int = 4  # passes over each rollout
    minibatch_size: int = 16
    lr: float = 5e-6  # policy; at 1e-5 the greedy held-out gold reward fell at every evaluation
    critic_lr: float = 5e-5
    clip_eps: float = 0.2  # policy ratio clip
    value_clip: float = 0.2  # how far one update may move a value from the rollout's
    gamma: float = 1.0
    lam: float = 0.95
    beta: float = 0.1  # KL coefficient (the start value when --target_kl is set)
    target_kl: Optional[float] = field(default=None, metadata={
        "help": "adapt beta so the KL of an answer (nats) tracks this; none = fixed beta"})
    kl_horizon: int = 1000  # adaptive controller: episodes over which beta may move by 20%
    kl_in_loss: bool = False  # KL as a loss term (k3) instead of a per-token reward penalty (k1)
    grad_clip: float = 1.0
    n_prompts: int = 2000  # questions about taught entities that rollouts draw from
    eval_questions: int = 200  # greedy answers per split in the evaluation
    eval_every: int = 5  # iterations between held-out evaluations
    out_dir: str = "out"
    device: str = "auto"
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16 (CUDA)
    seed: int = 0
    smoke: bool = False


SMOKE = dict(n_pairs=200, sampled_pairs=32, val_pairs=32, rm_steps=60, rm_batch_size=16,
             rm_lr=1e-3, rm_warmup_steps=2, rm_eval_every=10, ppo_iters=3, rollout_batch=8,
             max_new_tokens=12, ppo_epochs=2, minibatch_size=4, lr=1e-3, critic_lr=1e-3,
             n_prompts=50, eval_questions=8, eval_every=2)

# ---------------------------------------------------------------------------- config
cfg = parse_config(RLHFConfig, description=__doc__)
if cfg.smoke:
    cfg = apply_smoke(cfg, SMOKE)
runtime = setup_runtime(cfg.device, cfg.dtype)
seed_everything(cfg.seed)
sft_dir = cfg.sft_dir or cfg.out_dir
world = World(seed=cfg.world_seed)

# ---------------------------------------------------------------------------- preference data
# Pairs about taught entities train the reward model; pairs about held-out entities (questions
# it has never seen answered) measure it. Held-out labels are noise-free: accuracy on them says
# how well the rater's taste was learned. Act 2 alone needs no pairs, except a file's prompts.
t0 = time.time()
if cfg.preferences:
    pairs = load_preferences(cfg.preferences)
    n_val = max(1, len(pairs) // 20)  # a held-out 5% of the user's pairs
    val_pairs, train_pairs = pairs[:n_val], pairs[n_val:]
elif cfg.acts != "ppo":
    sft_model, tokenizer, _ = load_stage(sft_dir, "sft", runtime.device)  # samples pairs
    train_pairs = alignment_pairs(sft_model, tokenizer, world, cfg.n_pairs, cfg.sampled_pairs,
                                  cfg.reward_persona, cfg.label_noise, cfg.seed, cfg.max_new_tokens)
    val_pairs = preference_pairs(world, "held_out", cfg.val_pairs, cfg.reward_persona,
                                 seed=cfg.seed + 1)


def pair_rewards(model, rendered):  # the reward model's scores of both answers: (B,), (B,)
    return pair_sequence_rewards(model, rendered, tokenizer.pad, runtime.autocast)


def pair_scores(model, rendered):  # the same over a whole data set, in eval mode
    return pair_sequence_scores(model, rendered, tokenizer.pad, runtime.autocast)


# ============================================================================ act 1: reward model
if cfg.acts != "ppo":
    # ------------------------------------------------------------------------ model
    # The SFT model with a scalar head, which starts at zero: no preference before training.
    reward_model, tokenizer, _ = load_stage(sft_dir, "sft", runtime.device, scalar_head=True,
                                            dropout=0.0)
    reward_model.train().scalar_head.likelihood_weight.requires_grad_(cfg.rm_likelihood)
    optimizer = reward_model.configure_optimizer(0.0, cfg.rm_lr, fused=runtime.fused_adamw)
    block_size = reward_model.config.block_size
    train_rendered, report = render_pairs(tokenizer, train_pairs, block_size)
    val_rendered, _ = render_pairs(tokenizer, val_pairs, block_size)
    print(f"reward model: train {report}; held out: {len(val_rendered)} pairs")
    data_rng = torch.Generator().manual_seed(cfg.seed)
    rm_log = JsonlLogger(os.path.join(cfg.out_dir, "reward_log.jsonl"))

    def save_reward_model(step, **extra):
        save_stage(cfg.out_dir, "reward", reward_model, tokenizer, cfg, step, **extra)

    # ------------------------------------------------------------------------ training loop
    step = 0
    progress = tqdm(range(cfg.rm_steps), desc="reward model", unit="step")
    try:
        for step in progress:
            set_lr(optimizer, lr_at(step, cfg.rm_lr, cfg.rm_warmup_steps, cfg.rm_steps,
                                    cfg.rm_lr / 10))
            rows = torch.randint(len(train_rendered), (cfg.rm_batch_size,), generator=data_rng)
            chosen_rewards, rejected_rewards = pair_rewards(
                reward_model, [train_rendered[i] for i in rows.tolist()])  # (B,) each
            loss = bradley_terry_loss(chosen_rewards, rejected_rewards)
            runtime.scaler.scale(loss).backward()
            loss_value = check_finite(loss, step, checkpoint_path(cfg.out_dir, "reward"))
            grad_norm = optimizer_step(reward_model, optimizer, runtime.scaler, 1.0)
            accuracy = preference_accuracy(chosen_rewards, rejected_rewards)
            progress.set_postfix(loss=f"{loss_value:.3f}", acc=f"{accuracy:.2f}")
            rm_log.log(step=step, loss=loss_value, accuracy=accuracy, grad_norm=grad_norm,
                       lr=optimizer.param_groups[0]["lr"])
            if (step + 1) % cfg.rm_eval_every == 0 or step == cfg.rm_steps - 1:
                chosen_rewards, rejected_rewards = pair_scores(reward_model, val_rendered)
                val_accuracy = preference_accuracy(chosen_rewards, rejected_rewards)
                val_loss = bradley_terry_loss(chosen_rewards, rejected_rewards).item()
                tqdm.write(f"step {step + 1}: held-out pair accuracy {val_accuracy:.1%}, "
                           f"loss {val_loss:.3f}")
                rm_log.log(step=step + 1, val_accuracy=val_accuracy, val_loss=val_loss)
    except KeyboardInterrupt:
        print(f"\ninterrupted: saving the reward model at step {step} to {cfg.out_dir}")
        save_reward_model(step)
        raise SystemExit(130)
    finally:
        progress.close()

    # ------------------------------------------------------------------------ normalise, measure
    # Scores in units of their spread over (a spread-out 1000 of) the training answers: see
    # normalise_reward_head.
    every = max(1, len(train_rendered) // 1000)
    chosen_rewards, rejected_rewards = pair_scores(reward_model, train_rendered[::every])
    normalise_reward_head(reward_model, torch.cat([chosen_rewards, rejected_rewards]))
    rm_metrics = {"val_accuracy": val_accuracy}
    if not cfg.preferences:  # the world's template pairs know their styles
        chosen_rewards, rejected_rewards = pair_scores(reward_model, val_rendered)
        print_accuracy_by_style(accuracy_by_style(
            val_pairs, (chosen_rewards > rejected_rewards).tolist()))
    if not cfg.preferences and cfg.reward_persona != "default":
        # how often this reward model agrees with the gold rater, who never saw its pairs
        gold_pairs, _ = render_pairs(tokenizer, preference_pairs(
            world, "held_out", cfg.val_pairs, "default", seed=cfg.seed + 2), block_size)
        rm_metrics["gold_accuracy"] = preference_accuracy(*pair_scores(reward_model, gold_pairs))
    rm_seconds = time.time() - t0
    print(f"act 1 took {rm_seconds:.0f}s: " + ", ".join(
        f"{k.replace('_', ' ')} {v:.1%}" for k, v in rm_metrics.items()))
    save_reward_model(cfg.rm_steps, metrics=rm_metrics, train_seconds=rm_seconds)
    plot_curves(os.path.join(cfg.out_dir, "reward_log.jsonl"), ["loss", "val_accuracy"],
                os.path.join(cfg.out_dir, "reward_curves.png"), title="reward model")
    print(f"saved {cfg.out_dir}/reward.pt and {cfg.out_dir}/reward_curves.png")
    if cfg.acts == "reward":
        raise SystemExit(0)
else:
    reward_model, tokenizer, _ = load_stage(cfg.out_dir, "reward", runtime.device)

# ============================================================================ act 2: PPO
# ---------------------------------------------------------------------------- four models
policy, _, _ = load_stage(sft_dir, "sft", runtime.device, dropout=0.0)
reference = copy.deepcopy(policy).requires_grad_(False)  # frozen, and in eval mode for good
critic = copy.deepcopy(reward_model).train()  # values start as the reward model's scores
reward_model.eval().requires_grad_(False)
policy.train()
policy_optimizer = policy.configure_optimizer(0.0, cfg.lr, fused=runtime.fused_adamw)
critic_optimizer = critic.configure_optimizer(0.0, cfg.critic_lr, fused=runtime.fused_adamw)
# one gradient scaler per optimizer (they do nothing unless float16 on CUDA)
critic_scaler = torch.amp.GradScaler(runtime.device_type, enabled=runtime.scaler.is_enabled())
if cfg.target_kl is not None:
    kl_controller = AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon)
else:
    kl_controller = FixedKLController(cfg.beta)

# ---------------------------------------------------------------------------- prompts
# Rollouts answer questions about taught entities; evaluation asks about held-out ones too.
block_size = policy.config.block_size
stop_ids = [tokenizer.end, tokenizer.eot]
if cfg.preferences:
    prompt_pool = pair_prompts(tokenizer, train_pairs)
    eval_sets = {"held_out": pair_prompts(tokenizer, val_pairs)[:cfg.eval_questions]}
else:
    prompt_pool = question_prompts(tokenizer, world.questions("taught", cfg.n_prompts, cfg.seed))
    eval_sets = {split: question_prompts(tokenizer, world.questions(split, cfg.eval_questions,
                                                                    cfg.seed + offset))
                 for split, offset in (("held_out", 1), ("taught", 2))}
prompt_pool = prompts_that_fit(prompt_pool, cfg.max_new_tokens, block_size)
judged = prompt_pool[0][1] is not None  # world questions: the gold rater can score answers


def judge(questions, responses):  # accuracy, words, flattery rate, gold reward (default rater)
    return answer_metrics(world, questions, response_texts(tokenizer, responses)) if judged else {}


def evaluate(model, prompts):
    """Greedy answers to evaluation prompts: the reward model's and the gold rater's verdicts."""
    responses, scores = greedy_answers(model, reward_model, [ids for ids, _ in prompts],
                                       cfg.max_new_tokens, stop_ids, tokenizer.pad,
                                       runtime.autocast)
    return {"proxy_reward": scores.mean().item(), **judge([q for _, q in prompts], responses)}


def save_policy(iteration, **extra):
    save_stage(cfg.out_dir, "rlhf", policy, tokenizer, cfg, iteration, **extra)


# ---------------------------------------------------------------------------- PPO loop
log = JsonlLogger(os.path.join(cfg.out_dir, "rlhf_log.jsonl"))
prompt_rng = torch.Generator().manual_seed(cfg.seed)
sample_rng = torch.Generator(runtime.device).manual_seed(cfg.seed)
results = {"sft": {split: evaluate(reference, prompts) for split, prompts in eval_sets.items()}}
log.log(iteration=0, **{f"eval_{k}": v for k, v in results["sft"]["held_out"].items()})
B = cfg.rollout_batch
iteration = 0
progress = tqdm(range(cfg.ppo_iters), desc="ppo", unit="iter")
t0 = time.time()
try:
    for iteration in progress:
        # ---- rollout: the policy answers, four models score every answer token
        rows = torch.randint(len(prompt_pool), (B,), generator=prompt_rng).tolist()
        batch = rollout(policy, reference, critic, reward_model, [prompt_pool[i][0] for i in rows],
                        cfg.max_new_tokens, stop_ids, tokenizer.pad, runtime.autocast, sample_rng)
        mask = batch.response_mask  # (B, T): the tokens the policy chose

        # ---- credit: rewards per token, then advantages
        beta = kl_controller.beta
        rewards, kl_per_token = kl_penalised_rewards(
            batch.logprobs, batch.ref_logprobs, batch.rewards, mask,
            0.0 if cfg.kl_in_loss else beta)  # (B, T) each
        advantages, returns = gae(rewards, batch.values, mask, cfg.gamma, cfg.lam)  # (B, T)
        advantages = whiten(advantages, mask)

        # ---- update: a few epochs of minibatches over the rollout
        policy_losses, value_losses, clip_fractions = [], [], []
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=prompt_rng).to(runtime.device)
            for start in range(0, B, cfg.minibatch_size):
                mb = order[start:start + cfg.minibatch_size]
                ids, pad_mask, mb_mask = batch.ids[mb], batch.pad_mask[mb], mask[mb]
                with runtime.autocast():
                    logprobs = sequence_logprobs(policy, ids, pad_mask)  # (b, T)
                    values = state_values(critic, ids, pad_mask)  # (b, T)
                policy_loss, clip_fraction = ppo_clip_loss(
                    logprobs, batch.logprobs[mb], advantages[mb], mb_mask, cfg.clip_eps)
                if cfg.kl_in_loss:
                    kl_loss = masked_mean(kl_k3(logprobs, batch.ref_logprobs[mb]), mb_mask)
                    policy_loss = policy_loss + beta * kl_loss
                critic_loss = value_loss(values, batch.values[mb], returns[mb], mb_mask,
                                         cfg.value_clip)
                check_finite(policy_loss + critic_loss, iteration,
                             checkpoint_path(cfg.out_dir, "rlhf"))
                # two models, two graphs, two optimizers: the losses never share a gradient
                runtime.scaler.scale(policy_loss).backward()
                critic_scaler.scale(critic_loss).backward()
                optimizer_step(policy, policy_optimizer, runtime.scaler, cfg.grad_clip)
                optimizer_step(critic, critic_optimizer, critic_scaler, cfg.grad_clip)
                policy_losses.append(policy_loss.item())
                value_losses.append(critic_loss.item())
                clip_fractions.append(clip_fraction.item())

        # ---- adapt beta to the KL of this rollout's answers, and log
        kl = kl_per_token.sum(1).mean().item()  # nats per answer (k1 summed over its tokens)
        kl_controller.update(kl, n_steps=B)
        record = dict(
            iteration=iteration, proxy_reward=batch.scores.mean().item(), kl=kl,
            kl_k3=torch.where(mask, kl_k3(batch.logprobs, batch.ref_logprobs), 0.0)
            .sum(1).mean().item(),
            beta=beta, response_length=mask.sum(1).float().mean().item(),
            finished=batch.finished.float().mean().item(), entropy=batch.entropy,
            clip_fraction=sum(clip_fractions) / len(clip_fractions),
            policy_loss=sum(policy_losses) / len(policy_losses),
            value_loss=sum(value_losses) / len(value_losses), seconds=time.time() - t0,
            **judge([prompt_pool[i][1] for i in rows], batch.responses()))
        log.log(record)
        if (iteration + 1) % cfg.eval_every == 0 and iteration + 1 < cfg.ppo_iters:
            log.log(iteration=iteration + 1, **{f"eval_{k}": v for k, v in
                                                evaluate(policy, eval_sets["held_out"]).items()})
        progress.set_postfix(proxy=f"{record['proxy_reward']:.2f}", kl=f"{kl:.2f}",
                             **({"gold": f"{record['gold_reward']:.2f}"} if judged else {}))
except KeyboardInterrupt:
    print(f"\ninterrupted: saving the policy after {iteration} iterations to {cfg.out_dir}")
    save_policy(iteration)
    raise SystemExit(130)
finally:
    progress.close()
ppo_seconds = time.time() - t0

# ---------------------------------------------------------------------------- evaluation
# Greedy answers of the SFT model and of the RLHF model to the same questions. The proxy reward is
# what PPO optimised; the gold reward is what we wanted.
results["rlhf"] = {split: evaluate(policy, prompts) for split, prompts in eval_sets.items()}
log.log(iteration=cfg.ppo_iters, **{f"eval_{k}": v for k, v in results["rlhf"]["held_out"].items()})
print(f"PPO took {ppo_seconds:.0f}s. Greedy answers to the same questions, SFT and RLHF:")
print_results(results)
save_policy(cfg.ppo_iters, metrics=results, train_seconds=ppo_seconds)

# ---------------------------------------------------------------------------- plots
log_path = os.path.join(cfg.out_dir, "rlhf_log.jsonl")
curves = ["proxy_reward", "gold_reward", "eval_gold_reward", "kl", "beta", "response_length",
          "entropy", "clip_fraction", "value_loss"]
plot_curves(log_path, [c for c in curves if judged or "gold" not in c],
            os.path.join(cfg.out_dir, "rlhf_curves.png"), title="PPO", x="iteration")
# one point per rollout: the proxy rises with the KL; the gold reward peaks and falls when hacked
plot_reward_vs_kl(log_path, os.path.join(cfg.out_dir, "rlhf_reward_vs_kl.png"))
print(f"saved {cfg.out_dir}/rlhf.pt, {log_path}, {cfg.out_dir}/rlhf_curves.png and "
      f"{cfg.out_dir}/rlhf_reward_vs_kl.png")
