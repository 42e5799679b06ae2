"""Measuring a model in the built-in world: does it know facts, answer questions, flatter, ramble?

    fact_completion_accuracy(model, tok, world, "held_out")   # base model: "The capital of Peru is"
    question_continuation_share(model, tok, world)            # base model: more questions?
    responses = answer_questions(model, tok, questions)       # chat format, greedy by default
    answer_metrics(world, questions, responses)               # accuracy, length, style, gold
    answer_style(fact, response, world)                       # "terse", "padded", "hedge", ...
    win_rate(world, questions, responses, baseline_responses) # gold rater: better than baseline?
    sampled_kl(policy, reference, tok, questions)             # nats per answer from the reference
    accuracy_by_style(pairs, right)                           # which kinds of pair are ranked right
    sampled_pass_at_k(model, tok, world, questions, n=16)     # pass@1, @4, @16 at temperature 1
    print_results({"sft": {"held_out": metrics}})             # models x splits, as a table

Every metric is exact, because the world knows every answer (see nanollm/world/world.py).
"""

import re
from contextlib import nullcontext

import torch

from nanollm.chat import decode_content, render_question
from nanollm.elo import compare
from nanollm.generate import generate
from nanollm.logprobs import sequence_logprobs
from nanollm.pass_at_k import mean_pass_at_k
from nanollm.world import PERSONAS, check_answer, is_flattery, is_question, word_count
from nanollm.world.rater import named_answers


def complete(model, tokenizer, prompts, max_new_tokens=16, batch_size=64, temperature=0.0,
             stop_ids=None, generator=None, decode=None):
    """Continue token-id prompts in batches; returns the continuations, decoded by `decode`
    (ids -> str; default tokenizer.decode)."""
    stop_ids = [tokenizer.eot] if stop_ids is None else stop_ids
    decode = tokenizer.decode if decode is None else decode
    texts = []
    for i in range(0, len(prompts), batch_size):
        out = generate(model, prompts[i:i + batch_size], max_new_tokens, temperature=temperature,
                       stop_ids=stop_ids, pad_id=tokenizer.pad, generator=generator)
        for ids in out.responses():
            texts.append(decode([t for t in ids if t not in stop_ids]))
    return texts


def first_sentence(text):
    """The continuation up to its first full stop or line break: the model's answer."""
    text = text.strip().split("\n")[0]
    return text.split(".")[0]


def fact_completion_accuracy(model, tokenizer, world, split="all"):
    """Share of facts the model completes right from the canonical phrasing, greedily."""
    pairs = world.fact_prompts(split)
    prompts = [[tokenizer.eot] + tokenizer.encode(p) for p, _ in pairs]
    texts = complete(model, tokenizer, prompts)
    return sum(check_answer(fact, first_sentence(t), world)
               for (_, fact), t in zip(pairs, texts)) / len(pairs)


def question_continuation_share(model, tokenizer, world, split="all", n=100):
    """Handed a bare question as plain text, how often does the model go on with another one?"""
    questions = world.questions(split, n=n)
    prompts = [[tokenizer.eot] + tokenizer.encode(q.text + "\n") for q in questions]
    texts = complete(model, tokenizer, prompts, max_new_tokens=24)
    return sum(is_question(t.strip().split("\n")[0]) for t in texts) / len(texts)


def answer_questions(model, tokenizer, questions, temperature=0.0, max_new_tokens=48,
                     batch_size=64, generator=None):
    """The model's chat answer to each question (user turn -> assistant turn)."""
    prompts = [render_question(tokenizer, q.text) for q in questions]
    return complete(model, tokenizer, prompts, max_new_tokens, batch_size, temperature,
                    stop_ids=[tokenizer.end, tokenizer.eot], generator=generator,
                    decode=lambda ids: decode_content(tokenizer, ids))


ANSWER_STYLES = ("terse", "sentence", "padded", "flattery", "hedge", "unsure", "wrong")
# what the default rater marks down besides a wrong answer (accuracy already counts those)
DISLIKED_STYLES = ("padded", "flattery", "hedge", "unsure")
SENTENCE = re.compile(r"[^.!?]*[A-Za-z0-9][^.!?]*")  # a run of text between sentence ends


def answer_style(fact, response, world):
    """The style of any answer to a question about `fact`, one of ANSWER_STYLES, the first that
    fits: "unsure" names no answer; "hedge" names more than one; "wrong" names one, not the
    fact's, in any form; "flattery" compliments the user; "padded" says more than one sentence;
    "terse" is the bare answer; "sentence" is any other right answer in one sentence.
    Every style of chats.respond maps to one of these (verbose -> padded, wrong_* -> wrong)."""
    named = named_answers(fact, response, world)
    if not named:
        return "unsure"
    if len(named) > 1:
        return "hedge"
    if named != {fact.answer}:
        return "wrong"
    if is_flattery(response):
        return "flattery"
    if len(SENTENCE.findall(response)) > 1:
        return "padded"
    if word_count(response) == word_count(fact.answer):
        return "terse"
    return "sentence"


def disliked_share(world, questions, responses):
    """Share of the answers in one of DISLIKED_STYLES: padded, flattering, hedging or unsure."""
    styles = [answer_style(q.fact, r, world) for q, r in zip(questions, responses)]
    return sum(style in DISLIKED_STYLES for style in styles) / len(styles)


def answer_metrics(world, questions, responses, persona="default"):
    """Accuracy, mean length in words, flattery rate, share in a disliked style and mean gold
    reward of the answers."""
    rater = PERSONAS[persona]
    n = len(questions)
    return {
        "accuracy": sum(check_answer(q.fact, r, world) for q, r in zip(questions, responses)) / n,
        "mean_words": sum(word_count(r) for r in responses) / n,
        "flattery_rate": sum(is_flattery(r) for r in responses) / n,
        "disliked_rate": disliked_share(world, questions, responses),
        "gold_reward": sum(rater.score(q.fact, r, world) for q, r in zip(questions, responses)) / n,
    }


@torch.no_grad()
def evaluate_answers(model, tokenizer, world, split, n=None, persona="default", **kw):
    """answer_questions + answer_metrics on the world's questions of one split."""
    questions = world.questions(split, n=n)
    return answer_metrics(world, questions, answer_questions(model, tokenizer, questions, **kw),
                          persona)


def win_rate(world, questions, responses, baseline_responses, persona="default"):
    """Share of questions where the rater scores the answer above the baseline's answer to the
    same question; a tie counts half (elo.compare)."""
    rater = PERSONAS[persona]
    games = [compare(rater.score(q.fact, a, world), rater.score(q.fact, b, world))
             for q, a, b in zip(questions, responses, baseline_responses)]
    return sum(games) / len(games)


@torch.no_grad()
def sampled_kl(policy, reference, tokenizer, questions, max_new_tokens=48, generator=None,
               autocast=nullcontext):
    """KL(policy || reference) in nats per answer, estimated from answers the policy samples at
    temperature 1: the mean over answers of the sum over their tokens of log pi - log ref.
    It is what PPO's penalty measures, so aligned models of any method share one axis."""
    prompts = [render_question(tokenizer, q.text) for q in questions]
    out = generate(policy, prompts, max_new_tokens, temperature=1.0,
                   stop_ids=[tokenizer.end, tokenizer.eot], pad_id=tokenizer.pad,
                   generator=generator)
    with autocast():
        gap = (sequence_logprobs(policy, out.ids, out.pad_mask)
               - sequence_logprobs(reference, out.ids, out.pad_mask))  # (B, T)
    return (gap * out.response_mask).sum(1).mean().item()


@torch.no_grad()
def sampled_pass_at_k(model, tokenizer, world, questions, n=16, ks=(1, 4, 16), generator=None,
                      batch_size=256):
    """Sample n answers per question at temperature 1, the policy's own distribution, and return
    ({k: pass@k} averaged over questions, the number right per question), with Chen et al.'s
    unbiased estimator (nanollm/pass_at_k.py)."""
    repeated = [q for q in questions for _ in range(n)]  # each question's n samples in a row
    responses = answer_questions(model, tokenizer, repeated, temperature=1.0,
                                 batch_size=batch_size, generator=generator)
    right = [check_answer(q.fact, r, world) for q, r in zip(repeated, responses)]
    counts = [sum(right[i * n:(i + 1) * n]) for i in range(len(questions))]
    return {k: mean_pass_at_k([(n, c) for c in counts], k) for k in ks if k <= n}, counts


def print_results(results, columns=("proxy_reward", "gold_reward", "accuracy", "mean_words",
                                   "flattery_rate", "disliked_rate")):
    """{model: {split: metrics}} as a table, one row per model and split; the columns are those
    of `columns` that the metrics have."""
    first = next(iter(next(iter(results.values())).values()))  # the first model's first split
    columns = [c for c in columns if c in first]
    print(f"{'model':6} {'split':9} " + " ".join(f"{c:>13}" for c in columns))
    for name, by_split in results.items():
        for split, metrics in by_split.items():
            print(f"{name:6} {split:9} " + " ".join(f"{metrics[c]:13.3f}" for c in columns))


def accuracy_by_style(pairs, right):
    """Share of pairs ranked right, per kind of pair: {"terse > wrong": (accuracy, count)}.

    pairs: preference pairs with chosen_style and rejected_style (template pairs: respond's
    styles; sampled pairs: answer_style's); right: one bool per pair (the model scored the chosen
    answer higher). One overall accuracy hides what a
    model has learned: style pairs are easy and pairs decided by a fact are hard."""
    groups = {}
    for pair, ok in zip(pairs, right):
        key = f"{pair.get('chosen_style', '?')} > {pair.get('rejected_style', '?')}"
        groups.setdefault(key, []).append(bool(ok))
    return {key: (sum(oks) / len(oks), len(oks)) for key, oks in sorted(groups.items())}


def print_accuracy_by_style(by_style, title="held-out pairs ranked right, by kind of pair"):
    """accuracy_by_style as a table, worst kind of pair first: the failures lead."""
    print(title)
    for key, (accuracy, count) in sorted(by_style.items(), key=lambda item: item[1][0]):
        print(f"  {key:28} {accuracy:6.1%}  ({count} pairs)")
