"""Ratings from pairwise comparisons: Elo, a Bradley-Terry fit, and an arena for checkpoints.

"Which model is better?" is often easier to answer one pair of answers at a time than on an
absolute scale, so leaderboards such as Chatbot Arena collect pairwise judgements and turn them
into one number per model. This file holds the two classic ways of doing that and an arena that
feeds them:

1. Elo (`expected_score`, `elo_update`, `elo_ratings`): after each game the winner takes points
   from the loser, more of them the more surprising the result. Online and order-dependent.
2. Bradley-Terry (`bradley_terry_fit`): P(a beats b) = sigmoid(s_a - s_b), with the strengths s
   fitted by maximum likelihood on all games at once, so the order of the games does not matter.
   `bootstrap_intervals` says how sure the fit is, by refitting on resampled games.
3. The arena (`play_arena`, `arena_games`, `rating_table`, `format_table`): every pair of
   contestants meets on every prompt; a judge picks the winner; the table ranks them.

Both scales agree: a gap of 400 Elo points means 10:1 odds, and strengths are reported as
1000 + s * 400 / ln(10), so a Bradley-Terry rating reads like an Elo rating.

    from nanollm.elo import play_arena, rating_table, format_table
    scores = {name: [PERSONAS["default"].score(fact, r) for fact, r in zip(facts, answers)]
              for name, answers in responses.items()}
    print(format_table(rating_table(list(scores), play_arena(scores))))

Simplifications compared to production leaderboards:
1. A tie counts as half a win for each side; there is no separate tie parameter (Rao-Kupper,
   Davidson).
2. The bootstrap resamples games as if independent. Games on one prompt share its difficulty,
   so the intervals come out a little narrow when prompts differ a lot.
3. A pairwise judge always sees contestant a first. Real judges (people and LLMs alike) favour
   one position; production arenas randomise the order or ask twice.
4. No style control, no weighting of games by how often each pair met.
"""

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

# A game is (player_a, player_b, score_a): 1 if a won, 0.5 for a tie, 0 if b won.
Game = tuple[str, str, float]

ELO_SCALE = 400                          # rating gap that makes the odds 10:1
ELO_K = 32                               # the most points one game can move a rating
ELO_INITIAL = 1000                       # everyone's rating before any game; the BT mean too
ELO_PER_NAT = ELO_SCALE / math.log(10)   # one unit of Bradley-Terry strength in Elo points
WIN, TIE, LOSS = 1.0, 0.5, 0.0

# Bradley-Terry fit: a Gaussian prior N(0, 1 / BT_PRIOR) on each strength. Weak enough to be
# invisible next to a few games of evidence, strong enough that a player who never lost gets a
# finite strength instead of running off to infinity.
BT_PRIOR = 0.01
BT_ITERATIONS = 100
BT_TOLERANCE = 1e-9                      # stop once no strength moves more than this
BT_MAX_HALVINGS = 30                     # line search: at most this many step halvings


# -------------------------------------------------------------------------------------------
# Elo


def expected_score(rating_a: float, rating_b: float, scale: float = ELO_SCALE) -> float:
    """The score a is expected to get against b, i.e. P(a wins) when ties are half a win:

        E_a = 1 / (1 + 10^((R_b - R_a) / scale))

    E_a + E_b = 1, and equal ratings give 0.5.
    """
    return 1.0 / (1.0 + 10.0 ** ((rating_b - rating_a) / scale))


def elo_update(rating_a: float, rating_b: float, score_a: float,
               k: float = ELO_K) -> tuple[float, float]:
    """Both ratings after one game in which a scored `score_a` (1 win, 0.5 tie, 0 loss):

        R_a' = R_a + k (S_a - E_a),    R_b' = R_b - k (S_a - E_a)

    What a gains, b loses, so the total is conserved. Beating a stronger player (small E_a) is
    worth more than beating a weaker one.
    """
    if not LOSS <= score_a <= WIN:
        raise ValueError(f"score_a must lie in [0, 1] (1 win, 0.5 tie, 0 loss), got {score_a}")
    change = k * (score_a - expected_score(rating_a, rating_b))
    return rating_a + change, rating_b - change


def _check_players(players: Sequence[str], games: Sequence[Game]) -> dict[str, int]:
    """Each player's row index; a game naming someone not in `players` is an error."""
    index = {name: i for i, name in enumerate(players)}
    if len(index) != len(players):
        raise ValueError(f"players must be unique, got {list(players)}")
    for game in games:
        if game[0] not in index or game[1] not in index:
            raise ValueError(f"game {game} names a player not in {list(players)}")
    return index


def elo_ratings(players: Sequence[str], games: Sequence[Game], k: float = ELO_K,
                initial: float = ELO_INITIAL, seed: int | None = None) -> dict[str, float]:
    """Everyone's Elo rating after playing `games` one after another.

    Elo was made for players whose strength drifts, so the latest games weigh most and the result
    depends on the order. Models in an arena do not change, so their games have no natural
    order: pass a seed to play them in a shuffled one (None keeps the order given).
    """
    _check_players(players, games)
    ratings = {name: float(initial) for name in players}
    order = np.arange(len(games))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(games))
    for i in order:
        a, b, score_a = games[i]
        ratings[a], ratings[b] = elo_update(ratings[a], ratings[b], score_a, k)
    return ratings


# -------------------------------------------------------------------------------------------
# Bradley-Terry


def win_matrix(players: Sequence[str], games: Sequence[Game]) -> np.ndarray:
    """W with W[i, j] = points player i scored against player j (a tie gives each 0.5).

    W + W.T counts the games between each pair; W[i, j] / (W + W.T)[i, j] is i's win rate.
    """
    index = _check_players(players, games)
    wins = np.zeros((len(players), len(players)))
    a = np.array([index[game[0]] for game in games], dtype=np.int64)
    b = np.array([index[game[1]] for game in games], dtype=np.int64)
    score_a = np.array([game[2] for game in games], dtype=np.float64)
    if np.any((score_a < LOSS) | (score_a > WIN)):
        raise ValueError("every score_a must lie in [0, 1] (1 win, 0.5 tie, 0 loss)")
    np.add.at(wins, (a, b), score_a)         # add.at, not +=, so repeated pairs all count
    np.add.at(wins, (b, a), WIN - score_a)
    return wins


def win_probability(strength_a: np.ndarray, strength_b: np.ndarray) -> np.ndarray:
    """The Bradley-Terry model: P(a beats b) = sigmoid(s_a - s_b) = 1 / (1 + e^-(s_a - s_b))."""
    return 1.0 / (1.0 + np.exp(-(strength_a - strength_b)))


def bradley_terry_log_likelihood(strengths: np.ndarray, wins: np.ndarray,
                                 prior: float = BT_PRIOR) -> float:
    """The log-likelihood of the games under strengths s, plus a Gaussian log-prior:

        log L(s) = sum_ij W_ij log sigmoid(s_i - s_j)  -  prior / 2 * sum_i s_i^2

    It is concave in s, so the maximum is unique and Newton's method finds it.
    """
    diff = strengths[:, None] - strengths[None, :]         # (P, P) s_i - s_j
    log_sigmoid = -np.logaddexp(0.0, -diff)                # stable log(sigmoid(diff))
    return float(np.sum(wins * log_sigmoid) - 0.5 * prior * np.sum(strengths ** 2))


def bradley_terry_newton_direction(strengths: np.ndarray, wins: np.ndarray,
                                   prior: float = BT_PRIOR) -> np.ndarray:
    """Newton's step (L + prior I)^-1 g uphill on `bradley_terry_log_likelihood`, where

        g_i  = sum_j (W_ij - N_ij p_ij) - prior s_i       (points won minus points expected)
        L    = D - C,   C_ij = N_ij p_ij (1 - p_ij),   D = diag(sum_j C_ij)

    with N = W + W^T the games per pair and p_ij = sigmoid(s_i - s_j). -(L + prior I) is the
    Hessian; L is a graph Laplacian (positive semi-definite), so the prior makes it invertible
    even for a player with no games.
    """
    games = wins + wins.T                                  # (P, P) N_ij
    p = win_probability(strengths[:, None], strengths[None, :])
    gradient = (wins - games * p).sum(axis=1) - prior * strengths
    curvature = games * p * (1.0 - p)                      # (P, P) C_ij
    laplacian = np.diag(curvature.sum(axis=1)) - curvature
    return np.linalg.solve(laplacian + prior * np.eye(len(strengths)), gradient)


def bradley_terry_fit(players: Sequence[str], games: Sequence[Game],
                      iterations: int = BT_ITERATIONS, prior: float = BT_PRIOR
                      ) -> dict[str, float]:
    """Maximum a posteriori Bradley-Terry strengths, on the Elo scale (mean 1000).

    Newton's method with step halving: a full Newton step can overshoot when a player is near
    undefeated, so a step is halved until the log-likelihood does not fall.
    """
    wins = win_matrix(players, games)
    strengths = np.zeros(len(players))
    for _ in range(iterations):
        direction = bradley_terry_newton_direction(strengths, wins, prior)
        current = bradley_terry_log_likelihood(strengths, wins, prior)
        step = 1.0
        for _ in range(BT_MAX_HALVINGS):
            if bradley_terry_log_likelihood(strengths + step * direction, wins, prior) >= current:
                break
            step /= 2
        strengths = strengths + step * direction
        if np.max(np.abs(step * direction), initial=0.0) < BT_TOLERANCE:
            break
    # Only differences are identified by the games; the prior already centres the strengths,
    # and subtracting the mean makes the anchor explicit.
    strengths = strengths - strengths.mean()
    return {name: ELO_INITIAL + ELO_PER_NAT * float(s) for name, s in zip(players, strengths)}


# -------------------------------------------------------------------------------------------
# How sure are we?


def bootstrap_intervals(players: Sequence[str], games: Sequence[Game],
                        fit: Callable[[Sequence[str], Sequence[Game]], dict[str, float]]
                        = bradley_terry_fit,
                        n_boot: int = 200, alpha: float = 0.05, seed: int = 0
                        ) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap: refit on `n_boot` resamples of the games (drawn with replacement)
    and keep the alpha/2 and 1 - alpha/2 quantiles of each player's rating.

    The spread of the refits stands in for the spread we would see if the whole tournament were
    played again. Any `fit(players, games) -> {player: rating}` works, Elo included.
    """
    rng = np.random.default_rng(seed)
    samples = np.empty((n_boot, len(players)))             # (n_boot, P)
    for b in range(n_boot):
        resample = [games[i] for i in rng.integers(len(games), size=len(games))]
        ratings = fit(players, resample)
        samples[b] = [ratings[name] for name in players]
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2], axis=0)
    return {name: (float(lo), float(hi)) for name, lo, hi in zip(players, low, high)}


# -------------------------------------------------------------------------------------------
# The arena


def compare(score_a: float, score_b: float) -> float:
    """One game from two judge scores: the higher score wins, equal scores tie."""
    if score_a == score_b:
        return TIE
    return WIN if score_a > score_b else LOSS


def play_arena(judge_scores: dict[str, Sequence[float]]) -> list[Game]:
    """Every pair of contestants meets on every prompt; the higher judge score wins.

    judge_scores[name][i] is the judge's score of that contestant's response to prompt i (for
    example the gold rater's score), so n contestants and m prompts give m * n(n-1)/2 games.
    """
    lengths = {name: len(scores) for name, scores in judge_scores.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"every contestant needs one score per prompt, got {lengths}")
    return [(a, b, compare(judge_scores[a][i], judge_scores[b][i]))
            for a, b in itertools.combinations(judge_scores, 2)
            for i in range(len(judge_scores[a]))]


def arena_games(responses: dict[str, Sequence[str]], prompts: Sequence,
                judge: Callable[[object, str, str], float]) -> list[Game]:
    """Like `play_arena`, for a judge that compares two responses directly.

    responses[name][i] answers prompts[i]; judge(prompt, response_a, response_b) returns a's
    score (1, 0.5 or 0). Whatever a prompt is (a string, a world fact) is passed through as is.
    """
    for name, answers in responses.items():
        if len(answers) != len(prompts):
            raise ValueError(f"{name} has {len(answers)} responses for {len(prompts)} prompts")
    return [(a, b, judge(prompt, responses[a][i], responses[b][i]))
            for a, b in itertools.combinations(responses, 2)
            for i, prompt in enumerate(prompts)]


def rating_table(players: Sequence[str], games: Sequence[Game], n_boot: int = 200,
                 seed: int = 0, alpha: float = 0.05, n_orders: int = 20) -> list[dict]:
    """One row per player, best first: Bradley-Terry rating ("bt") with its bootstrap interval
    ("low", "high"), Elo ("elo", the mean over `n_orders` shuffled orders of the games: one order
    alone leaves the last few games' luck in the ratings), the share of points won ("win_rate",
    NaN without games) and the number of games played ("games").
    """
    bt = bradley_terry_fit(players, games)
    orders = [elo_ratings(players, games, seed=seed + i) for i in range(n_orders)]
    elo = {name: float(np.mean([ratings[name] for ratings in orders])) for name in players}
    intervals = bootstrap_intervals(players, games, n_boot=n_boot, alpha=alpha, seed=seed)
    wins = win_matrix(players, games)
    points, played = wins.sum(axis=1), (wins + wins.T).sum(axis=1)
    rows = []
    for i, name in enumerate(players):
        rows.append({"name": name, "bt": bt[name], "low": intervals[name][0],
                     "high": intervals[name][1], "elo": elo[name],
                     "win_rate": float(points[i] / played[i]) if played[i] else math.nan,
                     "games": int(played[i])})
    return sorted(rows, key=lambda row: row["bt"], reverse=True)


def format_table(rows: Sequence[dict]) -> str:
    """The rows of `rating_table` as an aligned plain-text table."""
    width = max([len("model")] + [len(row["name"]) for row in rows])
    lines = [f"{'rank':>4}  {'model':<{width}}  {'BT':>6}  {'interval':>13}  {'Elo':>6}"
             f"  {'win rate':>8}  {'games':>6}"]
    for rank, row in enumerate(rows, start=1):
        interval = f"{row['low']:.0f}..{row['high']:.0f}"
        lines.append(f"{rank:>4}  {row['name']:<{width}}  {row['bt']:>6.0f}  {interval:>13}"
                     f"  {row['elo']:>6.0f}  {row['win_rate']:>8.1%}  {row['games']:>6}")
    return "\n".join(lines)
