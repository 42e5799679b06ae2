"""RLHF with PPO (or GRPO): tune the SFT model to raise a reward, on a KL leash to where it
started. Loads stage "sft" and, unless --reward verifiable, "reward" (train_reward.py); saves
stage "rlhf".

    python train_rlhf.py                              # from out/sft.pt and out/reward.pt
    python train_rlhf.py --smoke                      # seconds (after train_reward.py --smoke)
    python train_rlhf.py --beta 0 --ppo_iters 60      # no leash
    python train_rlhf.py --reward_dir out/length_rm --out_dir out/length_ppo
    python train_rlhf.py --preferences my_pairs.jsonl # PPO on the file's prompts
    python train_rlhf.py --resume                     # continue a stopped run, exactly
    python train_rlhf.py --lora_rank 8 --lr 5e-5      # LoRA on the policy, its base as reference
    python train_rlhf.py --algo grpo --reward verifiable --out_dir out/grpo   # no RM, no critic

PPO (the maths in nanollm/ppo.py, one iteration written out in its docstring): the policy answers
a batch of questions, every answer token is an action, the reward model judges the answers, and
a few epochs of clipped updates make the better-than-expected tokens more likely. Four models:
    policy     the SFT model, trained;
    reference  a frozen copy of the SFT model: the KL penalty measures the policy's drift from it;
    reward     the reward model of train_reward.py, frozen: the proxy reward;
    critic     the value function (ppo.Critic), a separate trunk initialised from the reward model.
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

Why a leash: the reward model is only right about answers like the ones it learned from. PPO
raises its score (the proxy reward); the world's default rater judges whether the answers got
better (the gold reward), on held-out questions. Without the leash (--beta 0) the policy drifts
as far as the reward model's mistakes allow, and a flawed reward model (train_reward.py
--reward_persona length) is hacked plainly: proxy up, gold down (Gao et al. 2022).

GRPO (--algo grpo, nanollm/grpo.py; Shao et al. 2024): each prompt is answered --group_size
times, each answer's advantage is its reward against the group's mean and std, the KL (k3) sits
in the loss with --beta (0.04 as in DeepSeekMath, unless given), and there is no critic. With
--reward verifiable the reward is the world's own check, 1 for a right answer and 0 otherwise
(world.verifiable_reward), and no reward model is loaded: the setting of DeepSeek-R1. Both
--algo values take both --reward values; PPO without a reward model starts its critic from the
SFT model with a value head of zeros.

Where it simplifies compared with InstructGPT and production trainers:
1. One prompt, one answer per row; no pretraining-gradient mix (PPO-ptx); no entropy bonus.
2. One process, no torch.compile.
3. With --preferences, PPO's prompts are the file's prompts; no gold rater can judge those
   answers, so only the proxy reward and the KL are reported.
"""

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
from tqdm import tqdm

from nanollm.bench import peak_memory_mb, state_memory_mb
from nanollm.checkpoint import checkpoint_path
from nanollm.config import check_flags, parse_config
from nanollm.errors import ConfigError, MissingCheckpoint, report_user_errors
from nanollm.formats import held_out_count, load_preferences
from nanollm.logprobs import sequence_logprobs
from nanollm.lora import FrozenBase, add_lora, lora_summary, merge_lora, save_adapters
from nanollm.optim import check_finite, optimizer_step
from nanollm.plot import plot_ppo, plot_reward_vs_kl
from nanollm.grpo import group_advantages, grpo_loss, silent_groups
from nanollm.ppo import (AdaptiveKLController, Critic, FixedKLController, gae, kl_k1, kl_k3,
                         kl_penalised_rewards, masked_mean, ppo_clip_loss, state_values,
                         value_loss, whiten)
from nanollm.reward import load_reward_model
from nanollm.rollout import (greedy_answers, pair_prompts, prompts_that_fit, question_prompts,
                             response_texts, rollout)
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.runs import StageRun, StopRequest
from nanollm.stages import load_stage
from nanollm.world import FAMILIES, World, verifiable_reward
from nanollm.world.evaluate import answer_metrics, print_results


@dataclass
class RLHFConfig:
    sft_dir: str = field(default="", metadata={"help": "folder holding sft.pt (default: out_dir)"})
    reward_dir: str = field(default="", metadata={
        "help": "folder holding reward.pt, from train_reward.py (default: out_dir)"})
    preferences: str = field(default="", metadata={
        "help": "JSONL preference pairs whose prompts PPO answers; default: world questions"})
    world_seed: int = 0
    algo: Literal["ppo", "grpo"] = "ppo"  # grpo: group-relative advantages, no critic
    reward: Literal["model", "verifiable"] = "model"  # reward.pt, or the world's check (0 / 1)
    group_size: int = 8  # grpo: answers sampled per prompt
    format_bonus: float = 0.0  # verifiable: added for an answer that is one plain sentence
    families: str = "capital,continent,sound,sum"  # the world's questions asked, e.g. "sum"
    ppo_iters: int = 20
    rollout_batch: int = 64  # answers sampled per iteration (grpo: prompts x group_size)
    max_new_tokens: int = 48
    ppo_epochs: int = 4  # passes over each rollout
    minibatch_size: int = 16
    lr: float = 5e-6  # the policy's; small, as every step moves the answers PPO samples next
    critic_lr: float = 5e-5
    lora_rank: int = 0  # > 0: the policy trains rank-r adapters (LoRA); the reference is its base
    lora_alpha: float = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
    lora_targets: str = "c_attn"  # block layers that get adapters, among c_attn, c_proj, c_fc
    clip_eps: float = 0.2  # policy ratio clip
    value_clip: float = 0.2  # how far one update may move a value from the rollout's
    gamma: float = 1.0
    lam: float = 0.95
    beta: Optional[float] = field(default=None, metadata={
        "help": "KL coefficient (the start value with --target_kl); default 0.1, grpo 0.04"})
    target_kl: Optional[float] = field(default=None, metadata={
        "help": "adapt beta so the KL of an answer (nats) tracks this; none = fixed beta"})
    kl_horizon: int = 1000  # adaptive controller: episodes over which beta may move by 20%
    kl_in_loss: bool = False  # KL as a loss term (k3) instead of a per-token reward penalty (k1)
    grad_clip: float = 1.0
    n_prompts: int = 2000  # questions about taught entities that rollouts draw from
    eval_questions: int = 200  # greedy answers per split in the evaluation
    eval_every: int = 5  # iterations between held-out evaluations
    out_dir: str = "out"
    overwrite: bool = False  # replace a finished (or unfinished) rlhf.pt in out_dir
    resume: bool = False  # continue the unfinished run in out_dir, exactly
    stop_at: int = 0  # stop after this iteration, saved as unfinished; 0 = ppo_iters
    device: str = "auto"
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16 (CUDA)
    seed: int = 0
    smoke: bool = False


SMOKE = dict(ppo_iters=3, rollout_batch=8, max_new_tokens=12, ppo_epochs=2, minibatch_size=4,
             lr=1e-3, critic_lr=1e-3, n_prompts=50, eval_questions=8, eval_every=2, group_size=4)

# ---------------------------------------------------------------------------- config
report_user_errors()  # a bad flag, file or checkpoint is one line, not a traceback
cfg = parse_config(RLHFConfig, description=__doc__, smoke=SMOKE)  # --smoke: a run of seconds
check_flags(cfg, positive=("ppo_iters", "rollout_batch", "max_new_tokens", "ppo_epochs",
                           "minibatch_size", "lr", "critic_lr", "clip_eps", "value_clip",
                           "kl_horizon", "n_prompts", "eval_questions", "eval_every",
                           "target_kl", "group_size"),
            non_negative=("beta", "grad_clip", "gamma", "lam", "stop_at", "lora_rank",
                          "format_bonus"),
            at_most={"stop_at": "ppo_iters"})
if cfg.gamma > 1 or cfg.lam > 1:
    raise ConfigError(f"--gamma {cfg.gamma} and --lam {cfg.lam} must lie in [0, 1]")
grpo = cfg.algo == "grpo"
G = cfg.group_size if grpo else 1  # answers per prompt in a rollout
if cfg.rollout_batch % G:
    raise ConfigError(f"--rollout_batch {cfg.rollout_batch} is not a multiple of --group_size {G}")
if cfg.reward == "verifiable" and cfg.preferences:
    raise ConfigError("--reward verifiable checks answers against the world's facts; the prompts "
                      "of --preferences have none: use --reward model")
beta_start = cfg.beta if cfg.beta is not None else (0.04 if grpo else 0.1)
runtime = setup_runtime(cfg.device, cfg.dtype)
seed_everything(cfg.seed)
reward_dir = cfg.reward_dir or cfg.out_dir
if cfg.reward == "model" and not os.path.exists(checkpoint_path(reward_dir, "reward")):
    raise MissingCheckpoint(f"no reward model in {reward_dir}: make one first with "
                            f"python train_reward.py --out_dir {reward_dir}")
run = StageRun(cfg.out_dir, "rlhf", cfg.ppo_iters, cfg.overwrite, cfg.resume)

# ---------------------------------------------------------------------------- four models
# (PPO with a reward model; GRPO drops the critic, a verifiable reward the reward model)
sft_dir = cfg.sft_dir or cfg.out_dir
policy, tokenizer, _ = load_stage(sft_dir, "sft", runtime.device, dropout=0.0)
if cfg.lora_rank:  # adapters only; the reference is the policy with its adapters off
    add_lora(policy, cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets.split(",")))
    print(lora_summary(policy))
    reference = FrozenBase(policy)
else:
    reference = copy.deepcopy(policy).requires_grad_(False)  # frozen, and in eval mode for good
reward_model = None
if cfg.reward == "model":
    reward_model, _, _ = load_reward_model(reward_dir, runtime.device)
    reward_model.requires_grad_(False)  # frozen: the proxy reward PPO raises
critic = critic_optimizer = None
if not grpo and reward_model is not None:
    critic = Critic.from_reward_model(reward_model).train()  # values start as the reward
elif not grpo:  # no reward model to start from: the SFT trunk, a value head of zeros
    critic = Critic(load_stage(sft_dir, "sft", runtime.device, dropout=0.0)[0]).train()
policy.train()
policy_optimizer = policy.configure_optimizer(0.0, cfg.lr, fused=runtime.fused_adamw)
if critic is not None:
    critic_optimizer = critic.configure_optimizer(0.0, cfg.critic_lr, fused=runtime.fused_adamw)
# one gradient scaler per optimizer (they do nothing unless float16 on CUDA)
critic_scaler = torch.amp.GradScaler(runtime.device_type, enabled=runtime.scaler.is_enabled())
if cfg.target_kl is not None:
    kl_controller = AdaptiveKLController(beta_start, cfg.target_kl, cfg.kl_horizon)
else:
    kl_controller = FixedKLController(beta_start)

# ---------------------------------------------------------------------------- prompts
# Rollouts answer questions about taught entities; evaluation asks about held-out ones too.
block_size = policy.config.block_size
stop_ids = [tokenizer.end, tokenizer.eot]
if cfg.preferences:  # the file's prompts: the first 5% for evaluation, as train_reward.py
    pairs = load_preferences(cfg.preferences)
    n_val = held_out_count(len(pairs), cfg.preferences, "pairs")
    prompt_pool = pair_prompts(tokenizer, pairs[n_val:])
    eval_sets = {"held_out": pair_prompts(tokenizer, pairs[:n_val])[:cfg.eval_questions]}
else:
    world = World(seed=cfg.world_seed)
    families = tuple(cfg.families.split(","))
    if not set(families) <= set(FAMILIES):
        raise ConfigError(f"--families {cfg.families!r}: expected some of {','.join(FAMILIES)}")
    prompt_pool = question_prompts(tokenizer, world.questions("taught", cfg.n_prompts, cfg.seed,
                                                              families))
    eval_sets = {split: question_prompts(tokenizer, world.questions(
                     split, cfg.eval_questions, cfg.seed + offset, families))
                 for split, offset in (("held_out", 1), ("taught", 2))}
prompt_pool = prompts_that_fit(prompt_pool, cfg.max_new_tokens, block_size)
judged = prompt_pool[0][1] is not None  # world questions: the gold rater can score answers


def judge(questions, responses):  # accuracy, words, flattery rate, gold reward (default rater)
    return answer_metrics(world, questions, response_texts(tokenizer, responses)) if judged else {}


def verifiable_scores(questions, responses):
    """(B,) the world's check of each answer: 1 right, 0 not (+ --format_bonus)."""
    texts = response_texts(tokenizer, responses)
    return torch.tensor([verifiable_reward(q.fact, text, world, cfg.format_bonus)
                         for q, text in zip(questions, texts)], device=runtime.device)


def evaluate(model, prompts):
    """Greedy answers to evaluation prompts: the reward's and the gold rater's verdicts."""
    questions = [q for _, q in prompts]
    responses, scores = greedy_answers(model, reward_model, [ids for ids, _ in prompts],
                                       cfg.max_new_tokens, stop_ids, tokenizer.pad,
                                       runtime.autocast)
    if reward_model is None:
        scores = verifiable_scores(questions, responses)
    return {"proxy_reward": scores.mean().item(), **judge(questions, responses)}


prompt_rng = torch.Generator().manual_seed(cfg.seed)
sample_rng = torch.Generator(runtime.device).manual_seed(cfg.seed)


def save_progress(iterations_done):
    """Everything a resumed run needs, to rlhf.unfinished.pt: the policy and its optimizer, the
    critic and its optimizer, beta and the prompt and sampling generators."""
    critic_state = {} if critic is None else dict(
        critic=critic.state_dict(), critic_optimizer=critic_optimizer.state_dict())
    return run.save_progress(policy, tokenizer, cfg, iterations_done, policy_optimizer,
                             beta=kl_controller.beta, prompt_rng=prompt_rng.get_state(),
                             sample_rng=sample_rng.get_state(), **critic_state)


# ---------------------------------------------------------------------------- PPO loop
state = run.resume_state(cfg, tokenizer, policy, map_location=runtime.device)
first_iteration = run.restore(state, policy, policy_optimizer) if state else 0  # --resume
if state is not None:  # and what PPO keeps besides: the critic, beta, two generators
    if critic is not None:
        critic.load_state_dict(state["critic"])
        critic_optimizer.load_state_dict(state["critic_optimizer"])
    kl_controller.beta = state["beta"]
    prompt_rng.set_state(state["prompt_rng"].cpu())
    sample_rng.set_state(state["sample_rng"].cpu())  # a CPU byte tensor, whatever the device
log = run.open_log(first_iteration)
results = {"sft": {split: evaluate(reference, prompts) for split, prompts in eval_sets.items()}}
if first_iteration == 0:
    log.log(iteration=0, **{f"eval_{k}": v for k, v in results["sft"]["held_out"].items()})
B = cfg.rollout_batch
done = first_iteration
progress = tqdm(range(first_iteration, cfg.ppo_iters), initial=first_iteration,
                total=cfg.ppo_iters, desc=cfg.algo, unit="iter")
t0 = time.time()
with StopRequest() as stop:
    for iteration in progress:
        # ---- rollout: the policy answers (grpo: each prompt G times in a row), models score
        rows = torch.randint(len(prompt_pool), (B // G,), generator=prompt_rng)
        rows = rows.repeat_interleave(G).tolist()
        questions = [prompt_pool[i][1] for i in rows]
        batch = rollout(policy, reference, critic, reward_model, [prompt_pool[i][0] for i in rows],
                        cfg.max_new_tokens, stop_ids, tokenizer.pad, runtime.autocast, sample_rng)
        mask = batch.response_mask  # (B, T): the tokens the policy chose
        # the reward model's rewards on the tokens (B, T), or the world's check of each answer (B,)
        token_rewards = (batch.rewards if reward_model is not None
                         else verifiable_scores(questions, batch.responses()))
        scores = token_rewards.sum(1) if token_rewards.dim() == 2 else token_rewards  # (B,)

        # ---- credit: PPO's per-token rewards and GAE, or GRPO's one advantage per answer
        beta = kl_controller.beta
        if grpo:  # its KL is a term of the loss (grpo_loss)
            advantages = group_advantages(scores, G)  # (B,)
            kl_per_token = torch.where(mask, kl_k1(batch.logprobs, batch.ref_logprobs), 0.0)
        else:
            rewards, kl_per_token = kl_penalised_rewards(
                batch.logprobs, batch.ref_logprobs, token_rewards, mask,
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
                if grpo:
                    policy_loss, clip_fraction = grpo_loss(
                        logprobs, batch.logprobs[mb], batch.ref_logprobs[mb], advantages[mb],
                        mb_mask, cfg.clip_eps, beta)
                else:
                    policy_loss, clip_fraction = ppo_clip_loss(
                        logprobs, batch.logprobs[mb], advantages[mb], mb_mask, cfg.clip_eps)
                    if cfg.kl_in_loss:
                        kl_loss = masked_mean(kl_k3(logprobs, batch.ref_logprobs[mb]), mb_mask)
                        policy_loss = policy_loss + beta * kl_loss
                check_finite(policy_loss, iteration, run.unfinished_path)
                runtime.scaler.scale(policy_loss).backward()
                optimizer_step(policy, policy_optimizer, runtime.scaler, cfg.grad_clip)
                if critic is not None:  # its own graph and optimizer: no gradient is shared
                    with runtime.autocast():
                        values = state_values(critic, ids, pad_mask)  # (b, T)
                    critic_loss = value_loss(values, batch.values[mb], returns[mb], mb_mask,
                                             cfg.value_clip)
                    check_finite(critic_loss, iteration, run.unfinished_path)
                    critic_scaler.scale(critic_loss).backward()
                    optimizer_step(critic, critic_optimizer, critic_scaler, cfg.grad_clip)
                    value_losses.append(critic_loss.item())
                policy_losses.append(policy_loss.item())
                clip_fractions.append(clip_fraction.item())

        # ---- adapt beta to the KL of this rollout's answers, and log
        kl = kl_per_token.sum(1).mean().item()  # nats per answer (k1 summed over its tokens)
        kl_controller.update(kl, n_steps=B)
        record = dict(
            iteration=iteration, proxy_reward=scores.mean().item(), kl=kl,
            kl_k3=torch.where(mask, kl_k3(batch.logprobs, batch.ref_logprobs), 0.0)
            .sum(1).mean().item(),
            beta=beta, response_length=mask.sum(1).float().mean().item(),
            finished=batch.finished.float().mean().item(), entropy=batch.entropy,
            clip_fraction=sum(clip_fractions) / len(clip_fractions),
            policy_loss=sum(policy_losses) / len(policy_losses),
            value_loss=sum(value_losses) / max(len(value_losses), 1), seconds=time.time() - t0,
            **({"silent_groups": silent_groups(scores, G) / (B // G)} if grpo else {}),
            **judge(questions, batch.responses()))
        log.log(record)
        progress.set_postfix(proxy=f"{record['proxy_reward']:.2f}", kl=f"{kl:.2f}",
                             **({"gold": f"{record['gold_reward']:.2f}"} if judged else {}))
        done = iteration + 1
        stopping = stop.requested or done == cfg.stop_at
        if done % cfg.eval_every == 0 and done < cfg.ppo_iters:
            log.log(iteration=done, **{f"eval_{k}": v for k, v in
                                       evaluate(policy, eval_sets["held_out"]).items()})
            if not stopping:
                save_progress(done)  # what a killed run can --resume from
        if stopping:
            break
progress.close()
ppo_seconds = time.time() - t0
if done < cfg.ppo_iters:
    run.stop(save_progress(done), done, stop.requested)
save_progress(done)  # every iteration kept, whatever happens during the evaluation

# ---------------------------------------------------------------------------- evaluation
# Greedy answers of the SFT model and of the RLHF model to the same questions. The proxy reward is
# what PPO optimised; the gold reward is what we wanted.
results["rlhf"] = {split: evaluate(policy, prompts) for split, prompts in eval_sets.items()}
log.log(iteration=cfg.ppo_iters, **{f"eval_{k}": v for k, v in results["rlhf"]["held_out"].items()})
memory = peak_memory_mb(runtime)  # the process's peak (CPU) or the allocator's (CUDA), MiB
models = [m for m in (policy, reference, reward_model, critic) if m is not None]
held = state_memory_mb(models, [o for o in (policy_optimizer, critic_optimizer) if o is not None])
per_iteration = ppo_seconds / max(done - first_iteration, 1)
print(f"{cfg.algo.upper()} took {ppo_seconds:.0f}s ({per_iteration:.2f} s per iteration), peak "
      f"memory {memory:.0f} MiB ({len(models)} models' weights and optimizer state: {held:.0f} "
      f"MiB). Greedy answers, SFT and RLHF:")
print_results(results)
if cfg.lora_rank:  # the adapters alone to rlhf.lora.pt; merged, rlhf.pt loads like any stage
    save_adapters(cfg.out_dir, "rlhf", policy, cfg)
    merge_lora(policy)
run.save_finished(policy, tokenizer, cfg, metrics=results, train_seconds=ppo_seconds,
                  peak_memory_mb=memory, state_memory_mb=held)

# ---------------------------------------------------------------------------- plots
log_path = run.log_path
plot_ppo(log_path, os.path.join(cfg.out_dir, "rlhf_curves.png"))
# one point per rollout: the proxy rises with the KL; the gold reward peaks and falls when hacked
plot_reward_vs_kl(log_path, os.path.join(cfg.out_dir, "rlhf_reward_vs_kl.png"))
print(f"saved {cfg.out_dir}/rlhf.pt, {log_path}, {cfg.out_dir}/rlhf_curves.png and "
      f"{cfg.out_dir}/rlhf_reward_vs_kl.png")
