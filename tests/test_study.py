"""The paper's methods as configurations, and the seeded single-process study runner."""

import json
from dataclasses import replace

import jax
import numpy as np
import pytest

from learner.study.runner import RunConfig, run_method
from learner.study.sources import data_folder, prepare
from learner.study.suites import SUITES
from learner.study.sweep import run_study
from shared.config import PretrainConfig, apply_overrides
from shared.learning.methods import METHODS, MethodConfig, mixed_batch, online_agent
from shared.presets import peg_sim_online, peg_sim_pretrain
from shared.storage.checkpoint import Checkpointer, load_checkpoint
from shared.storage.replay_buffer import ReplayBuffer
from tests.helpers import trees_equal

TINY = ["agent.critic_net.hidden_dims=[16,16]", "agent.actor_net.hidden_dims=[16,16]", "agent.num_critics=2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from shared.learning.agents import create_agent

    cfg = apply_overrides(peg_sim_pretrain(), [*TINY, "agent.cql.lagrange=true"])
    obs = {"state": np.zeros(19, np.float32)}
    path = tmp_path_factory.mktemp("pre") / "checkpoints"
    ck = Checkpointer(path, async_save=False)
    ck.save(create_agent(cfg.agent, obs, 6, seed=3), obs, cfg)
    ck.close()
    return load_checkpoint(path)


def test_each_init_takes_exactly_its_parts_from_pretraining(pretrained):
    online = apply_overrides(peg_sim_online(), TINY).agent
    pre = pretrained.agent
    same = lambda a, b: trees_equal(a, b)
    full = online_agent(MethodConfig(), pretrained, online)
    assert same(full.actor.params, pre.actor.params) and same(full.critic.params, pre.critic.params)
    assert same(full.actor.opt_state, pre.actor.opt_state) and full.config.algo == "sac"
    assert "cql_alpha" not in full.aux  # SAC does not use it
    pol = online_agent(MethodConfig(init="policy"), pretrained, online)
    assert same(pol.actor.params, pre.actor.params) and not same(pol.critic.params, pre.critic.params)
    q = online_agent(MethodConfig(init="q"), pretrained, online)
    assert not same(q.actor.params, pre.actor.params) and same(q.critic.params, pre.critic.params)
    assert same(q.target_critic, pre.target_critic)
    none = online_agent(MethodConfig(init="none"), pretrained, online)
    assert not same(none.actor.params, pre.actor.params) and not same(none.critic.params, pre.critic.params)
    # state normalisation is part of the model, even from scratch
    assert none.config.encoder.state_mean == pre.config.encoder.state_mean
    cont = online_agent(MethodConfig(warmup="none", online_algo="pretrained"), pretrained, online)
    assert cont.config.algo == "calql" and cont.config.utd == online.utd
    assert same(cont.aux["cql_alpha"].params, pre.aux["cql_alpha"].params)  # kept, with its optimizer
    pess = online_agent(MethodConfig(online_algo="calql"), pretrained, online)
    assert pess.config.algo == "calql" and same(pess.critic.params, pre.critic.params)
    # a method names the pre-training it starts from
    with pytest.raises(ValueError, match="starts from a iql checkpoint, got a calql one"):
        online_agent(METHODS["iql"], pretrained, online)


def test_a_mixed_batch_takes_its_fraction_from_the_offline_data():
    spec = {"state": ((3,), "float32")}

    def buffer(reward):
        b = ReplayBuffer(spec, 2, 100, 0.99, -1.0)
        for i in range(50):
            b.insert(
                {
                    "observations": {"state": np.full(3, i, np.float32)},
                    "actions": np.zeros(2, np.float32),
                    "rewards": reward,
                    "next_observations": {"state": np.full(3, i + 1, np.float32)},
                    "masks": 1.0,
                    "dones": i == 49,
                }
            )
        return b

    online, offline = buffer(-1.0), buffer(5.0)
    rng = np.random.default_rng(0)
    batch = mixed_batch(online, offline, 0.5, 64, rng, leading=(3,))
    assert batch["rewards"].shape == (3, 64) and batch["observations"]["state"].shape == (3, 64, 3)
    assert np.all((batch["rewards"] == 5.0).sum(axis=1) == 32)  # RLPD's symmetric sampling, per minibatch
    assert np.all(mixed_batch(online, offline, 0.0, 64, rng)["rewards"] == -1.0)  # WSRL: online only
    assert np.all(mixed_batch(online, None, 0.5, 64, rng)["rewards"] == -1.0)
    # the official layout (finetune.py + update_high_utd): half of all 4 x 64 rows offline, online
    # rows first, cut into the 4 minibatches in order: two all-online critic steps, two all-offline
    official = mixed_batch(online, offline, 0.5, 64, rng, leading=(4,), layout="concatenated")
    assert official["rewards"].shape == (4, 64) and official["observations"]["state"].shape == (4, 64, 3)
    assert (official["rewards"] == 5.0).sum(axis=1).tolist() == [0, 0, 64, 64]


# Env steps without an update in the smoke suite (K = 80, UTD 2, batch 16, 240 env steps), counted
# by hand from the official finetune.py: max(K, utd x batch x (1 - offline fraction)), except the
# eager variants (ours before), which update right after their warmup.
SMOKE_NO_UPDATE = {
    "wsrl": 80,  # K
    "wsrl_no_warmup": 32,  # no warmup, but 2 x 16 steps before the first update
    "wsrl_no_warmup_eager": 0,
    "wsrl_random_warmup": 80,
    "wsrl_dataset_warmup": 32,  # K offline transitions, no env steps, then the 32 of the rule
    "wsrl_k500": 240,  # K beyond the budget: never updates
    "wsrl_k1000": 240,
    "wsrl_retain": 80,
    "wsrl_policy_only": 80,
    "wsrl_q_only": 80,
    "wsrl_no_init": 80,
    "wsrl_calql_online": 80,
    "sac_fast": 80,  # its own untrained policy for K steps
    "sac_fast_random": 80,
    "rlpd": 80,  # launch_rlpd.sh's --warmup_steps: K of its own policy
    "rlpd_eager": 0,
    "jsrl": 32,
    "calql": 32,
    "cql": 32,
    "iql": 32,
    "calql_retain": 16,  # 2 x 16 x (1 - 0.5)
    "cql_retain": 16,
    "iql_retain": 16,
}


@pytest.mark.slow
def test_the_smoke_study_runs_every_method_on_the_same_budget_and_schedule(tmp_path):
    results = run_study("smoke", tmp_path, progress=False)
    suite = SUITES["smoke"]
    utd = 2  # the smoke suite's online UTD
    runs = results["tasks"]["peg"]
    assert set(runs) == set(METHODS) == set(SMOKE_NO_UPDATE)
    for name, seeds in runs.items():
        curve = seeds["0"]["curve"]
        assert [c["env_steps"] for c in curve] == [suite.eval_every, suite.env_steps], name
        m = METHODS[name]
        env_warmup = min(SMOKE_NO_UPDATE[name], suite.env_steps)
        assert min(m.no_update_steps(suite.warmup_steps, utd, 16), suite.env_steps) == env_warmup, name
        # exact UTD: one update of utd critic steps per env step after the env warmup, none before
        expected = utd * max(0, suite.eval_every - env_warmup)
        assert curve[0]["grad_steps"] == expected, (name, curve[0]["grad_steps"], expected)
        assert curve[-1]["grad_steps"] == utd * (suite.env_steps - env_warmup), name
        assert 0.0 <= seeds["0"]["final_success_rate"] <= 1.0
        last = json.loads((tmp_path / "runs" / "peg" / name / "seed_0" / "metrics.jsonl").read_text().splitlines()[-1])
        for probe in ("offline_probe", "online_probe"):
            for measure in ("q", "td_error", "kl_policy", "kl_means", "kl_q_softmax"):
                assert np.isfinite(last[f"diag/{probe}/{measure}"]), (name, probe, measure)
        assert last["chattering"] >= 0.0
        assert np.isfinite(last["diag/eval/q_minus_return"]) and last["diag/eval/return"] <= 0.0
        assert last["train_episodes"] >= 0 and "train_success_rate" in last
    # each continued offline method started from its own pre-training (CQL and IQL made too)
    assert {p.name.split("-")[1] for p in (tmp_path / "cache").glob("peg-*/pretrain-*")} == {"calql", "cql", "iql"}
    # JSRL's guide acted, and only in JSRL
    assert runs["jsrl"]["0"]["guided_steps"] > 0
    assert all(seeds["0"]["guided_steps"] == 0 for name, seeds in runs.items() if name != "jsrl")
    assert (tmp_path / "results_peg.png").stat().st_size > 0
    for group in ("no_retention", "retention", "warmup", "init", "table1"):  # the paper's figures, each
        assert (tmp_path / f"results_peg_{group}.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["suite"] == "smoke"
    md = (tmp_path / "results.md").read_text()
    assert "| peg | `wsrl` | 1 |" in md and "C8: warmup is critical" in md
    # a committed bundle (results.json) alone gives back the same tables and the figures (the
    # command's own main; its process entry is test_command_line's)
    from learner.study.cli import main as study_main

    study_main(["--report-only", "--results", str(tmp_path / "results.json"), "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "results.md").read_text() == md
    figures = sorted(f.name for f in tmp_path.glob("results_*.png"))
    assert sorted(f.name for f in (tmp_path / "again").glob("results_*.png")) == figures and len(figures) >= 6
    # resuming a finished study reruns nothing: every summary is kept as it was
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("**/summary.json")}
    again = run_study("smoke", tmp_path, ["wsrl", "rlpd"], progress=False)
    assert set(again["tasks"]["peg"]) == {"wsrl", "rlpd"}
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("**/summary.json")} == before
    # a study's committed results.json carries its runs to a new folder (another session, machine)
    moved = run_study("smoke", tmp_path / "moved", ["wsrl"], progress=False, prior=results)
    assert moved["tasks"]["peg"]["wsrl"]["0"] == results["tasks"]["peg"]["wsrl"]["0"]
    assert (tmp_path / "moved" / "runs" / "peg" / "wsrl" / "seed_0" / "summary.json").exists()
    assert not (tmp_path / "moved" / "cache").exists()  # nothing was made: no data, no pre-training
    assert (tmp_path / "moved" / "results.md").read_text().count("| peg | `wsrl` | 1 |") == 1
    # a run made under another config is not taken (here another budget): it would run again
    other = run_study(
        "smoke",
        tmp_path / "other",
        ["wsrl"],
        progress=False,
        prior=results,
        report_only=True,
        budget={"env_steps": 360},
    )
    assert other["tasks"] == {}


@pytest.mark.slow
def test_a_run_is_determined_by_its_seed(tmp_path):
    suite = SUITES["smoke"]
    pretrained, offline, probe = prepare(suite, tmp_path)
    online = apply_overrides(peg_sim_online(), [*suite.overrides, *suite.online_overrides])
    # K = 10: RLPD waits max(K, 2 x 16 x 0.5) = 16 env steps, then updates on the official layout
    run = RunConfig("rlpd", 60, 10, 30, 2, seed=5)
    a = run_method(run, online, pretrained, offline, tmp_path / "a", probe)
    b = run_method(run, online, pretrained, offline, tmp_path / "b", probe)
    # the same evaluations and the same training figures (losses, Q) at every evaluation
    a_rows, b_rows = ((tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("a", "b"))
    assert a_rows == b_rows and len(a_rows) == 2 and a["curve"] == b["curve"]
    assert any(k.startswith("train/") for k in json.loads(a_rows[-1]))
    # a checkpoint and data made elsewhere (run_sim.sh's cache) are used as they are, not remade
    (folder,) = (tmp_path / "cache").glob("peg-*")
    (ckpt,) = folder.glob("pretrain-calql-*/checkpoints")
    data = folder / "offline.npz"
    ext, ext_offline, _ = prepare(suite, tmp_path / "ext", pretrained_dir=ckpt, offline_data=data)
    assert trees_equal(ext.agent, pretrained.agent) and len(ext_offline) == len(offline)
    assert not list((tmp_path / "ext").glob("cache/*/pretrain-*")) and not list(
        (tmp_path / "ext").glob("**/offline.npz")
    )
    with pytest.raises(ValueError, match="together"):
        prepare(suite, tmp_path / "ext2", pretrained_dir=ckpt)


@pytest.mark.slow
def test_online_seeds_run_on_the_data_and_pretraining_their_suite_gives_them(tmp_path, monkeypatch):
    """With data_seeds 2, seeds 0 and 2 share data seed 0 and seed 1 has its own: two datasets,
    two pre-trainings, each run's source naming its own."""
    monkeypatch.setitem(SUITES, "smoke_data", replace(SUITES["smoke"], data_seeds=2))
    results = run_study("smoke_data", tmp_path, ["wsrl"], seeds=3, progress=False)
    sources = {s: r["run"]["source"] for s, r in results["tasks"]["peg"]["wsrl"].items()}
    assert sources["0"] == sources["2"] != sources["1"]
    folders = {d: data_folder(SUITES["smoke"], "peg", d) for d in (0, 1)}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(folders.values())
    for d, folder in folders.items():
        (pre,) = (tmp_path / "cache" / folder).glob("pretrain-calql-*")
        assert load_checkpoint(pre / "checkpoints").phase_config(PretrainConfig).seed == d
        assert sources[str(d)] == f"{folder}/{pre.name}"


@pytest.mark.slow
def test_the_table1_protocol_runs_end_to_end_at_smoke_size(tmp_path):
    """The Table-1 analogue at smoke size: data from a guided RLPD run (demonstrations, the
    scripted person's interventions) in the wide reset box, per data seed; Cal-QL pre-training
    checkpoints scored and the earliest in range used; WSRL and RLPD on it; the T1 claim."""
    from robot_env import contract
    from shared.data.dataset import load_arrays
    from shared.storage.checkpoint import list_steps

    results = run_study("table1_smoke", tmp_path, progress=False)
    suite = SUITES["table1_smoke"]
    runs = results["tasks"]["peg_table1"]
    assert set(runs) == {"wsrl", "rlpd", "rlpd_eager"} and all(set(v) == {"0", "1"} for v in runs.values())
    for d in (0, 1):
        folder = tmp_path / "cache" / data_folder(suite, "peg_table1", d)
        summary = json.loads((folder / "offline.summary.json").read_text())
        assert summary["source"] == "guided_rlpd" and summary["task"] == "peg_insertion_hard_wide"
        assert summary["demos"] == 20 and summary["seed"] == d
        assert 250 <= summary["rlpd_transitions"] < 250 + 100  # whole episodes: the last one finished
        assert 0.0 < summary["intervened_fraction"] < 1.0
        arrays, _ = load_arrays(folder / "offline.npz")
        assert arrays["intervened"].any() and not arrays["intervened"].all()
        # the episodes start in peg_insertion_hard_wide's reset box (+-9 cm a side, its task file),
        # and some beyond peg_insertion_hard's +-7 cm, where the online runs and evaluations start
        data = ReplayBuffer.load(folder / "offline.npz")
        starts = np.setdiff1d(data.obs_slot[data.valid], np.flatnonzero(data.valid))  # reset frames
        xy = data.frames["state"][starts][:, contract.state_slices()["tcp_pose"]][:, :2]
        assert np.abs(xy).max() <= 0.09 + 0.005 and (np.abs(xy) > 0.07 + 0.005).any()
        (pre,) = folder.glob("pretrain-calql-*")
        select = json.loads((pre / "select.json").read_text())
        scored = [int(k) for k in select["scores"]]
        assert scored == list_steps(pre / "checkpoints")  # each checkpoint scored as it was made
        lo, hi = select["range"]
        in_range = [int(k) for k, n in select["scores"].items() if lo <= n <= hi]
        assert select["in_range"] == bool(in_range)
        if in_range:  # pre-training stopped at the first score in range
            assert in_range == [scored[-1]] == [select["selected"]]
        else:  # to the end, then the closest to the middle
            assert scored == [20, 40, 60] and select["selected"] in scored
    md = (tmp_path / "results.md").read_text()
    assert "T1: with the same guided-run buffer" in md


def test_diagnostics_against_hand_computed_values(pretrained):
    from shared.data.returns import episode_returns
    from shared.learning.diagnostics import chattering, mean_kl, policy_kl, probe_values, q_minus_return, q_softmax_kl
    from shared.learning.networks import forward

    agent = pretrained.agent
    rng = np.random.default_rng(0)
    probe = {
        "observations": {"state": rng.normal(size=(8, 19)).astype(np.float32)},
        "next_observations": {"state": rng.normal(size=(8, 19)).astype(np.float32)},
        "actions": rng.uniform(-1, 1, (8, 6)).astype(np.float32),
        "rewards": np.full(8, -1.0, np.float32),
        "masks": np.ones(8, np.float32),
    }
    key = jax.random.PRNGKey(0)
    # a policy and a Q-function compared with themselves: no divergence
    assert policy_kl(agent, agent, probe["observations"], key) == pytest.approx(0.0, abs=1e-6)
    assert q_softmax_kl(agent, agent, probe["observations"], key) == pytest.approx(0.0, abs=1e-6)
    vals = probe_values(agent, probe, key)
    q = forward(agent.nets["critic"], agent.critic.params, probe["observations"], probe["actions"])
    assert vals["q"] == pytest.approx(float(np.mean(q)), rel=1e-5) and vals["td_error"] >= 0.0
    other = online_agent(MethodConfig(init="none"), pretrained, apply_overrides(peg_sim_online(), TINY).agent)
    assert policy_kl(agent, other, probe["observations"], key) > 0.0
    # 0.5 |mu_pre - mu|^2 by hand from the two actors' means
    mu_a, _ = forward(agent.nets["actor"], agent.actor.params, probe["observations"])
    mu_b, _ = forward(other.nets["actor"], other.actor.params, probe["observations"])
    by_hand = 0.5 * np.mean(np.sum((np.asarray(mu_a) - np.asarray(mu_b)) ** 2, axis=-1))
    assert mean_kl(agent, other, probe["observations"]) == pytest.approx(by_hand, rel=1e-5)
    assert mean_kl(agent, agent, probe["observations"]) == 0.0
    # Q minus the return that followed, gamma 0.98 and r_neg -1: an episode [-1, -1, 0] (success)
    # has returns [-1.98, -1, 0]; one that never succeeds [-1, -1] is worth -1/(1 - 0.98) = -50
    rollout = {
        "observations": {"state": probe["observations"]["state"][:5]},
        "actions": probe["actions"][:5],
        "rewards": np.array([-1.0, -1.0, 0.0, -1.0, -1.0], np.float32),
        "dones": np.array([False, False, True, False, True]),
    }
    returns = [-1.98, -1.0, 0.0, -50.0, -50.0]
    assert agent.config.gamma == 0.98
    assert episode_returns(rollout["rewards"], rollout["dones"], 0.98, -1.0) == pytest.approx(returns, rel=1e-6)
    q5 = np.asarray(q).mean(axis=0)[:5]
    got = q_minus_return(agent, rollout, -1.0)
    assert got["q_minus_return"] == pytest.approx(float(np.mean(q5 - np.array(returns))), rel=1e-5)
    assert got["return"] == pytest.approx(np.mean(returns), rel=1e-6)
    with pytest.raises(ValueError, match="does not end"):
        episode_returns(np.zeros(2), np.array([True, False]), 0.99, -1.0)
    # on a probe with Monte-Carlo returns, only the rows whose episode finished (finite) count
    mc = np.array([-1.98, -1.0, np.nan, -50.0, np.nan, np.nan, 0.0, np.nan], np.float32)
    q8 = np.asarray(q).mean(axis=0)
    known = np.isfinite(mc)
    by_hand = float(np.mean(q8[known] - mc[known]))
    assert probe_values(agent, {**probe, "mc_returns": mc}, key)["q_minus_return"] == pytest.approx(by_hand, rel=1e-5)
    assert np.isnan(probe_values(agent, {**probe, "mc_returns": np.full(8, np.nan, np.float32)}, key)["q_minus_return"])
    # diagnose: every measure of each probe, q_minus_return only where the probe has returns, and
    # one compilation for both probes of one size (the online one has no returns, an extra key)
    from shared.learning import diagnostics

    online = {**probe, "dones": np.zeros(8)}
    compiled = diagnostics._diagnose_probe._cache_size()
    got = diagnostics.diagnose(
        agent, other, {"offline_probe": {**probe, "mc_returns": mc}, "online_probe": online}, key
    )
    assert diagnostics._diagnose_probe._cache_size() == compiled + 1
    measures = {"q", "td_error", "kl_policy", "kl_means", "kl_q_softmax"}
    assert set(got) == {f"{p}/{m}" for p in ("offline_probe", "online_probe") for m in measures} | {
        "offline_probe/q_minus_return"
    }
    q_other = np.asarray(forward(other.nets["critic"], other.critic.params, probe["observations"], probe["actions"]))
    for name in ("offline_probe", "online_probe"):
        assert got[f"{name}/q"] == pytest.approx(float(q_other.mean()), rel=1e-5)
        assert got[f"{name}/kl_means"] == pytest.approx(mean_kl(agent, other, probe["observations"]), rel=1e-5)
    by_hand = float(np.mean(q_other.mean(axis=0)[known] - mc[known]))
    assert got["offline_probe/q_minus_return"] == pytest.approx(by_hand, rel=1e-5)
    # |(3,4) - (0,0)| = 5, then 0; the step across the episode boundary does not count
    assert chattering(
        [np.zeros(2), np.array([3.0, 4.0]), np.array([3.0, 4.0]), np.zeros(2)], [False, False, True, False]
    ) == pytest.approx(2.5)


def test_jsrls_guide_probability_falls_linearly_to_zero():
    m = METHODS["jsrl"]
    assert m.guide_probability(0, 1000) == 1.0
    assert m.guide_probability(250, 1000) == pytest.approx(0.75)
    assert m.guide_probability(1000, 1000) == 0.0 and m.guide_probability(1500, 1000) == 0.0
    assert MethodConfig(jsrl_anneal=0.5).guide_probability(250, 1000) == pytest.approx(0.5)
    assert METHODS["wsrl"].guide_probability(0, 1000) == 0.0


@pytest.mark.slow
def test_a_dry_run_prices_every_cell_from_the_measured_update_costs():
    from learner.study.cli import dry_run

    plan = dry_run("smoke", ["wsrl", "calql", "rlpd"], None, 2, seconds=0.2)
    suite = SUITES["smoke"]
    assert [(c["method"], c["seed"]) for c in plan["cells"]] == [
        (m, s) for m in ("wsrl", "calql", "rlpd") for s in range(2)
    ]
    kinds = {c["method"]: c["kind"] for c in plan["cells"]}
    assert kinds == {"wsrl": "sac@utd2", "calql": "calql@utd2", "rlpd": "sac+mix@utd2"}
    updates = {c["method"]: c["updates"] for c in plan["cells"]}
    # the official schedules (SMOKE_NO_UPDATE): calql waits 2 x 16 steps, RLPD its K
    assert updates == {m: suite.env_steps - SMOKE_NO_UPDATE[m] for m in ("wsrl", "calql", "rlpd")}
    for c in plan["cells"]:  # the updates at the measured cost, plus env steps and evaluations
        assert c["predicted_s"] >= c["updates"] * plan["update_s"][f"{c['task']}:{c['kind']}"] - 0.1
    assert plan["total_s"] >= sum(c["predicted_s"] for c in plan["cells"]) + plan["pretrain_s"] - 0.5
    # K and the budget from the command line: WSRL updates on every step after its warmup
    short = dry_run("smoke", ["wsrl"], None, 1, seconds=0.1, budget={"env_steps": 200, "warmup_steps": 40})
    assert short["cells"][0]["updates"] == 160


def test_a_resumed_study_keeps_a_run_only_if_it_started_from_the_same_data_and_pretraining(tmp_path):
    from dataclasses import asdict, replace

    from learner.study.sources import data_folder, pretrain_config, pretrain_folder
    from learner.study.sweep import finished_run

    suite = SUITES["smoke"]
    source = f"{data_folder(suite, 'peg')}/{pretrain_folder(pretrain_config(suite, (), 'calql'))}"
    assert source.startswith("peg-") and "/pretrain-calql-" in source
    run = RunConfig("wsrl", 240, 80, 120, 4, seed=0, source=source)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"run": asdict(run), "final_success_rate": 0.5}))
    assert finished_run(path, run)["final_success_rate"] == 0.5
    # another pre-training config (e.g. more steps) or task settings: a different source, rerun
    longer = f"{data_folder(suite, 'peg')}/{pretrain_folder(pretrain_config(replace(suite, pretrain_steps=300), (), 'calql'))}"
    assert longer != source and finished_run(path, replace(run, source=longer)) is None
    assert data_folder(suite, "peg") != data_folder(suite, "peg_hard")
    path.write_text("{not json")
    assert finished_run(path, run) is None
    # a report of a study that has not finished a run yet: no run, no data made, an empty table
    empty = run_study("smoke", tmp_path / "new", ["wsrl"], progress=False, report_only=True)
    assert empty["tasks"] == {} and not (tmp_path / "new" / "cache").exists()
    assert "## The paper's claims" in (tmp_path / "new" / "results.md").read_text()


def test_results_test_the_claims_on_each_task_and_draw_the_weak_pretraining(tmp_path):
    from learner.study.report import write_results
    from learner.study.suites import SUITES

    def run(rates: list[float]) -> dict:
        curve = [{"env_steps": 1000 * (i + 1), "success_rate": r} for i, r in enumerate(rates)]
        return {"curve": curve, "final_success_rate": rates[-1]}

    good, bad = [0.0, 0.5, 1.0], [0.0, 0.0, 0.0]
    seeds = lambda rates: {str(s): run(rates) for s in range(5)}
    results = {
        "tasks": {
            "peg_hard": {"wsrl": seeds(good), "wsrl_no_warmup": seeds(bad), "wsrl_k500": seeds(good)},
            "peg_noexpert": {"wsrl": seeds(bad)},
            "maze": {"wsrl": seeds(good), "sac_fast": seeds(bad)},
        }
    }
    write_results(results, tmp_path, "full")
    md = (tmp_path / "results.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| C")}
    # C8 on each task: wsrl minus no warmup, AUC 0.5 in every pair; not run on the maze
    assert "+0.50 [+0.50, +0.50] | 5 | holds | reproduced" in rows["C8: warmup is critical"]
    assert "not run" in rows["C8 (maze): warmup is critical"]
    # C14 on peg_hard only (its weak variant is peg_noexpert): final 0 on the weak task against 1
    assert "-1.00 [-1.00, -1.00] | 5 | holds | reproduced" in rows["C14: WSRL cannot rescue a failed pre-training"]
    assert not any(k.startswith("C14 (maze)") for k in rows)
    assert (tmp_path / "results_peg_noexpert_vs_peg_hard.png").stat().st_size > 0
    assert (tmp_path / "results_peg_hard_k.png").exists() and not (tmp_path / "results_maze_k.png").exists()
    assert SUITES["full"].methods_for("maze")[:2] == ["wsrl", "wsrl_no_warmup"]
    assert SUITES["full"].methods_for("maze", ["rlpd"]) == ["rlpd"]
