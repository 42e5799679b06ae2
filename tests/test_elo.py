"""Elo and Bradley-Terry ratings against hand-worked values and simulated tournaments."""

import math

import numpy as np
import pytest

from nanollm.elo import ELO_INITIAL, ELO_PER_NAT, arena_games, bootstrap_intervals, \
    bradley_terry_fit, bradley_terry_log_likelihood, compare, elo_ratings, elo_update, \
    expected_score, format_table, play_arena, rating_table, win_matrix, win_probability

PLAYERS = ["w", "x", "y", "z"]
TRUE_STRENGTHS = np.array([0.0, 0.5, 1.0, 2.0])  # natural units: P(i beats j) = sigmoid(s_i - s_j)


def _simulate(rng, n_games, strengths=TRUE_STRENGTHS, players=PLAYERS):
    """Random pairings; each game won by a with the Bradley-Terry probability."""
    games = []
    for _ in range(n_games):
        i, j = rng.choice(len(players), size=2, replace=False)
        a_won = rng.random() < win_probability(strengths[i], strengths[j])
        games.append((players[i], players[j], 1.0 if a_won else 0.0))
    return games


def _true_elo(strengths=TRUE_STRENGTHS):
    """The truth as the fit reports it: mean anchored at 0, on the Elo scale."""
    return ELO_INITIAL + ELO_PER_NAT * (strengths - strengths.mean())


def test_expected_score_is_symmetric_and_half_at_equal_ratings():
    assert expected_score(1000, 1000) == 0.5
    assert expected_score(1400, 1000) == pytest.approx(10 / 11)  # 400 points = 10:1 odds
    for ra, rb in [(1000, 1200), (1500, 900), (873.5, 1321.25)]:
        assert expected_score(ra, rb) + expected_score(rb, ra) == pytest.approx(1.0)
    assert expected_score(1200, 1000) > 0.5 > expected_score(1000, 1200)


def test_elo_and_bradley_terry_scales_agree():
    for sa, sb in [(0.0, 1.0), (2.0, -0.5), (0.3, 0.3)]:
        elo_a, elo_b = ELO_INITIAL + ELO_PER_NAT * sa, ELO_INITIAL + ELO_PER_NAT * sb
        assert expected_score(elo_a, elo_b) == pytest.approx(win_probability(sa, sb))


def test_elo_update_moves_toward_the_winner_and_conserves_the_total():
    assert elo_update(1000, 1000, 1.0, k=32) == (1016, 984)     # E = 0.5: half of k changes hands
    for ra, rb in [(1000, 1000), (1200, 1000), (900, 1300)]:
        for score_a in (1.0, 0.5, 0.0):
            new_a, new_b = elo_update(ra, rb, score_a)
            assert new_a + new_b == pytest.approx(ra + rb)
            expected = expected_score(ra, rb)
            # a moves up exactly when it did better than expected
            assert np.sign(new_a - ra) == np.sign(score_a - expected)
    # an upset is worth more than a win the ratings predicted
    assert elo_update(900, 1300, 1.0)[0] - 900 > elo_update(1300, 900, 1.0)[0] - 1300
    with pytest.raises(ValueError):
        elo_update(1000, 1000, 2.0)


def test_elo_ratings_rank_the_strongest_first_and_keep_the_total():
    games = _simulate(np.random.default_rng(0), 400)
    ratings = elo_ratings(PLAYERS, games, seed=0)
    assert sum(ratings.values()) == pytest.approx(len(PLAYERS) * ELO_INITIAL)
    assert max(ratings, key=ratings.get) == "z" and min(ratings, key=ratings.get) == "w"
    # Elo depends on the order of the games; Bradley-Terry does not
    assert elo_ratings(PLAYERS, games, seed=1) != elo_ratings(PLAYERS, games, seed=2)
    assert bradley_terry_fit(PLAYERS, games[::-1]) == pytest.approx(
        bradley_terry_fit(PLAYERS, games))


def test_win_matrix_counts_wins_and_half_ties():
    games = [("a", "b", 1.0), ("a", "b", 0.5), ("b", "a", 1.0), ("b", "c", 0.0)]
    expected = np.array([[0.0, 1.5, 0.0],
                         [1.5, 0.0, 0.0],
                         [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(win_matrix(["a", "b", "c"], games), expected)
    with pytest.raises(ValueError):
        win_matrix(["a", "b"], games)  # "c" is not a player


def test_bradley_terry_two_players_match_the_closed_form():
    # With two players the maximum-likelihood gap is log(wins / losses): 30 to 10 gives ln 3.
    games = [("a", "b", 1.0)] * 30 + [("a", "b", 0.0)] * 10
    ratings = bradley_terry_fit(["a", "b"], games, prior=1e-9)
    assert ratings["a"] - ratings["b"] == pytest.approx(ELO_PER_NAT * math.log(3), abs=1e-3)
    assert ratings["a"] + ratings["b"] == pytest.approx(2 * ELO_INITIAL)


def test_bradley_terry_fit_is_the_maximum_of_the_likelihood():
    games = _simulate(np.random.default_rng(1), 200)
    prior = 0.01
    fitted = bradley_terry_fit(PLAYERS, games, prior=prior)
    strengths = np.array([(fitted[p] - ELO_INITIAL) / ELO_PER_NAT for p in PLAYERS])
    wins = win_matrix(PLAYERS, games)
    best = bradley_terry_log_likelihood(strengths, wins, prior)
    for i in range(len(PLAYERS)):
        for nudge in (-1e-3, 1e-3):
            moved = strengths.copy()
            moved[i] += nudge
            assert bradley_terry_log_likelihood(moved, wins, prior) < best


def test_bradley_terry_recovers_known_strengths():
    games = _simulate(np.random.default_rng(2), 2000)
    ratings = bradley_terry_fit(PLAYERS, games)
    recovered = np.array([(ratings[p] - ELO_INITIAL) / ELO_PER_NAT for p in PLAYERS])
    truth = TRUE_STRENGTHS - TRUE_STRENGTHS.mean()
    np.testing.assert_allclose(recovered, truth, atol=0.15)
    assert sorted(PLAYERS, key=ratings.get) == PLAYERS  # order exactly right


def test_undefeated_player_stays_finite():
    ratings = bradley_terry_fit(["a", "b", "c"], [("a", "b", 1.0)] * 10 + [("b", "c", 0.5)] * 4)
    assert all(math.isfinite(r) for r in ratings.values())
    assert ratings["a"] > ratings["b"] == pytest.approx(ratings["c"], abs=50)


def test_bootstrap_intervals_cover_the_truth_at_about_the_nominal_rate():
    rng = np.random.default_rng(3)
    truth = _true_elo()
    covered = []
    for tournament in range(40):
        games = _simulate(rng, 300)
        intervals = bootstrap_intervals(PLAYERS, games, n_boot=60, alpha=0.05, seed=tournament)
        covered += [intervals[p][0] <= t <= intervals[p][1] for p, t in zip(PLAYERS, truth)]
    coverage = np.mean(covered)
    # 160 checks of a 95% interval: zero-width intervals would cover ~never, and intervals that
    # were far too wide would cover every single time
    assert 0.8 <= coverage < 0.99, coverage


def test_bootstrap_works_with_elo_as_the_fit():
    games = _simulate(np.random.default_rng(4), 200)
    intervals = bootstrap_intervals(PLAYERS, games, fit=elo_ratings, n_boot=20)
    assert all(low < high for low, high in intervals.values())


def test_arena_ranks_a_over_b_over_c():
    n_prompts = 5
    # on every prompt A's response scores best, then B's, then C's; D ties B everywhere
    judge_scores = {"C": [0.1] * n_prompts, "A": [0.9] * n_prompts,
                    "B": [0.5] * n_prompts, "D": [0.5] * n_prompts}
    games = play_arena(judge_scores)
    assert len(games) == n_prompts * 6  # 4 contestants make 6 pairs
    rows = rating_table(list(judge_scores), games, n_boot=50, seed=0)
    assert [row["name"] for row in rows][0] == "A" and rows[-1]["name"] == "C"
    by_name = {row["name"]: row for row in rows}
    assert by_name["A"]["bt"] > by_name["B"]["bt"] > by_name["C"]["bt"]
    assert by_name["A"]["elo"] > by_name["B"]["elo"] > by_name["C"]["elo"]
    assert by_name["B"]["bt"] == pytest.approx(by_name["D"]["bt"])
    assert by_name["A"]["win_rate"] == 1.0 and by_name["C"]["win_rate"] == 0.0
    assert by_name["B"]["win_rate"] == pytest.approx(0.5)
    assert all(row["low"] <= row["bt"] <= row["high"] for row in rows)
    text = format_table(rows)
    names_in_text = [line.split()[1] for line in text.splitlines()[1:]]  # after the header
    assert names_in_text == [row["name"] for row in rows]


def test_pairwise_judge_gives_the_same_games_as_judge_scores():
    prompts = ["p0", "p1", "p2"]
    responses = {"terse": ["Paris.", "4.", "Moo."],
                 "verbose": ["It is Paris, of course.", "Four, I think.", "Moo."]}

    def judge(prompt, response_a, response_b):
        return compare(-len(response_a), -len(response_b))  # the shorter answer wins

    scores = {name: [-len(r) for r in answers] for name, answers in responses.items()}
    assert arena_games(responses, prompts, judge) == play_arena(scores)
    assert [game[2] for game in play_arena(scores)] == [1.0, 1.0, 0.5]
    with pytest.raises(ValueError):
        play_arena({"a": [1.0, 2.0], "b": [1.0]})
