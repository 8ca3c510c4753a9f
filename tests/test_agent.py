"""KarmicAgent, trajectory shards and GAE: shapes, recurrence, round trips, known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from karmic.agents import KarmicAgent
from karmic.training.ppo import gae
from pipelines.trajectories import (
    TrajectoryShard,
    list_shards,
    prune_shards,
    read_shard,
    write_shard,
)

OBS = (11, 11, 3)


def _obs(T, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (T, B, *OBS), generator=g, dtype=torch.uint8)


def test_forward_shapes_and_size_independent_of_grid():
    torch.manual_seed(0)
    agent = KarmicAgent(OBS, n_actions=8, hidden=256)
    T, B = 7, 4
    logits, value, (h, c), z = agent(_obs(T, B), agent.initial_state(B), torch.zeros(T, B, dtype=torch.bool))
    assert logits.shape == (T, B, 8) and value.shape == (T, B)
    assert h.shape == c.shape == (1, B, 256) and z.shape == (T, B, agent.latent)
    n_params = sum(p.numel() for p in agent.parameters())
    assert n_params < 1_000_000  # the original grew to 59M with the grid
    assert agent.flops_per_step() > 0


def test_sequence_equals_step_by_step_and_resets_at_starts():
    """The fused sequence path, the masked per-step path and single steps agree."""
    torch.manual_seed(1)
    agent = KarmicAgent(OBS, hidden=32, n_agents=3)
    T, B = 6, 3
    obs = _obs(T, B, 1)
    ids = torch.tensor([0, 1, 2])
    st = (torch.randn(1, B, 32), torch.randn(1, B, 32))
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[3, 1] = True  # an episode starts mid-sequence for slot 1
    with torch.no_grad():
        logits, value, (h, c), _ = agent(obs, st, starts, ids)
        s = st
        for t in range(T):
            lg, v, s, _ = agent(obs[t : t + 1], s, starts[t : t + 1], ids)
            torch.testing.assert_close(lg[0], logits[t])
            torch.testing.assert_close(v[0], value[t])
        torch.testing.assert_close(s[0], h)
        # after the reset, slot 1 is as if it started from zeros at t=3
        lg2, _, _, _ = agent(obs[3:, 1:2], agent.initial_state(1), torch.zeros(3, 1, dtype=torch.bool), ids[1:2])
        torch.testing.assert_close(lg2[:, 0], logits[3:, 1])
        # a start at t=0 zeroes the given state
        s0 = torch.ones(T, B, dtype=torch.bool)[:1].expand(T, B).clone()
        s0[1:] = False
        a, _, _, _ = agent(obs, st, s0, ids)
        b, _, _, _ = agent(obs, agent.initial_state(B), torch.zeros(T, B, dtype=torch.bool), ids)
        torch.testing.assert_close(a, b)


def test_identity_input_required_when_configured():
    agent = KarmicAgent(OBS, hidden=16, n_agents=5)
    with pytest.raises(ValueError, match="agent_ids"):
        agent(_obs(1, 2), agent.initial_state(2), torch.zeros(1, 2, dtype=torch.bool))


def test_tvt_agent_reads_feed_the_heads():
    agent = KarmicAgent(OBS, hidden=16, latent=8, use_tvt=True, memory_size=10)
    T, B = 3, 2
    obs, st, starts = _obs(T, B), agent.initial_state(B), torch.zeros(T, B, dtype=torch.bool)
    empty = agent(obs, st, starts)[0]
    mem = torch.randn(B, 5, agent.tvt.word)
    valid = torch.ones(T, B, 5, dtype=torch.bool)
    full = agent(obs, st, starts, memory=(mem, valid))[0]
    assert not torch.allclose(empty, full)  # what is read changes the policy
    assert agent.last_read.weights.shape == (T, B, agent.tvt.heads, 5)
    torch.testing.assert_close(agent.last_read.weights.sum(-1), torch.ones(T, B, agent.tvt.heads))


def test_gae_known_answer():
    # one slot, 3 steps, episode starts again at t=2; gamma=0.5, lambda=1
    r = np.array([[1.0], [2.0], [4.0]], np.float32)
    v = np.array([[0.5], [1.0], [2.0]], np.float32)
    starts = np.array([[1], [0], [1]], np.uint8)
    adv, ret = gae(r, v, starts, np.array([8.0], np.float32), np.array([0], np.uint8), 0.5, 1.0)
    # t=2: 4 + .5*8 - 2 = 6; t=1: episode ends -> 2 - 1 = 1; t=0: 1 + .5*1 - .5 + .5*1 = 1.5
    np.testing.assert_allclose(adv[:, 0], [1.5, 1.0, 6.0])
    np.testing.assert_allclose(ret[:, 0], adv[:, 0] + v[:, 0])


def _shard(update=0, K=2, L=3, B=2, N=2, H=4, seed=0):
    rng = np.random.default_rng(seed)
    R = K * B * N
    S = B * N
    slot = np.tile(np.arange(S), K)
    return TrajectoryShard(
        run_id="r1", update=update, seq_len=L, num_envs=B, n_agents=N,
        obs=rng.integers(0, 2, (R, L, *OBS), dtype=np.uint8),
        h0=rng.standard_normal((R, H)).astype(np.float32),
        c0=rng.standard_normal((R, H)).astype(np.float32),
        steps={
            "action": rng.integers(0, 8, (R, L)).astype(np.int8),
            "reward": rng.standard_normal((R, L)).astype(np.float32),
            "start": rng.integers(0, 2, (R, L)).astype(np.uint8),
            "logprob": rng.standard_normal((R, L)).astype(np.float32),
            "value": rng.standard_normal((R, L)).astype(np.float32),
        },
        rows={
            "update": np.full(R, update, np.int32), "chunk": np.repeat(np.arange(K), S).astype(np.int32),
            "slot": slot.astype(np.int32), "env": (slot // N).astype(np.int32),
            "agent": (slot % N).astype(np.int16), "episode": np.zeros(R, np.int64),
            "t0": np.zeros(R, np.int32), "global_step": np.zeros(R, np.int64),
            "next_value": rng.standard_normal(R).astype(np.float32),
            "next_start": np.zeros(R, np.uint8),
        },
    )


def test_shard_round_trip_and_layout(tmp_path):
    s = _shard()
    path = write_shard(tmp_path, s)
    assert path.name == "shard-000000.parquet" and "run_id=r1" in str(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    back = read_shard(path)
    np.testing.assert_array_equal(back.obs, s.obs)
    np.testing.assert_array_equal(back.h0, s.h0)
    for k in s.steps:
        np.testing.assert_array_equal(back.steps[k], s.steps[k])
    for k in s.rows:
        np.testing.assert_array_equal(back.rows[k], s.rows[k])
    # time-major and back is the identity; row (k, s) step l is step k*L+l of slot s
    tm = back.time_major(back.reward)
    assert tm.shape == (6, 4)
    assert tm[4, 3] == back.reward[1 * 4 + 3, 1]
    np.testing.assert_array_equal(back.from_time_major(tm), back.reward)


def test_prune_keeps_last_k(tmp_path):
    for u in range(5):
        write_shard(tmp_path, _shard(update=u))
    removed = prune_shards(tmp_path, "r1", keep=2)
    assert [p.name for p in removed] == [f"shard-00000{u}.parquet" for u in range(3)]
    assert [read_shard(p).update for p in list_shards(tmp_path, "r1")] == [3, 4]


def test_foreign_file_is_a_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), p)
    with pytest.raises(ValueError, match="not a karmic trajectory shard"):
        read_shard(p)


def _mc_returns(r, starts, next_value, next_start, gamma):
    """Reference: discounted returns per slot, cut at episode starts, bootstrapped at the end."""
    T, S = r.shape
    out = np.zeros_like(r, dtype=np.float64)
    for s in range(S):
        acc = 0.0 if next_start[s] else float(next_value[s])
        for t in range(T - 1, -1, -1):
            if t + 1 < T and starts[t + 1, s]:
                acc = 0.0
            acc = r[t, s] + gamma * acc
            out[t, s] = acc
    return out



@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 12),
    S=st.integers(1, 3),
    gamma=st.floats(0.5, 1.0),
    seed=st.integers(0, 10_000),
)
def test_gae_lambda_one_is_monte_carlo(T, S, gamma, seed):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((T, S)).astype(np.float32)
    v = rng.standard_normal((T, S)).astype(np.float32)
    starts = rng.integers(0, 2, (T, S)).astype(np.uint8)
    nv = rng.standard_normal(S).astype(np.float32)
    ns = rng.integers(0, 2, S).astype(np.uint8)
    adv, ret = gae(r, v, starts, nv, ns, gamma, 1.0)
    np.testing.assert_allclose(ret, _mc_returns(r, starts, nv, ns, gamma), rtol=1e-4, atol=1e-4)
    # lambda = 0: one-step TD errors
    adv0, _ = gae(r, v, starts, nv, ns, gamma, 0.0)
    nxt = np.concatenate([v[1:], nv[None]])
    nonterm = 1 - np.concatenate([starts[1:], ns[None]]).astype(np.float32)
    np.testing.assert_allclose(adv0, r + gamma * nxt * nonterm - v, rtol=1e-5, atol=1e-5)


def test_prepared_observations_encode_to_the_same_bits():
    """The learner converts a shard's observations once (prepare_obs); each minibatch's gather of
    them must encode exactly as the uint8 rows did, in bf16; in fp32 nothing is converted."""
    torch.manual_seed(0)
    agent = KarmicAgent(OBS, hidden=32)
    obs = _obs(6, 5)  # (R, L, V, V, C), as a shard holds them
    assert agent.prepare_obs(obs) is obs
    idx = torch.tensor([4, 0, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        ready = agent.prepare_obs(obs)
        assert ready.dtype == torch.bfloat16 and ready.shape == (6, 5, OBS[2], OBS[0], OBS[1])
        want = agent.encode(obs[idx].transpose(0, 1))
        got = agent.encode(ready.index_select(0, idx).transpose(0, 1))
    assert torch.equal(got, want)


@pytest.mark.parametrize("amp", [False, True])
def test_lstm_cell_step_is_the_per_gate_rule_bit_for_bit(amp):
    """_lstm_step's batched activations give exactly the textbook per-chunk cell."""
    torch.manual_seed(1)
    agent = KarmicAgent(OBS, hidden=64)
    lstm = agent.lstm
    x, h, c = torch.randn(80, agent.latent), torch.randn(80, 64), torch.randn(80, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), torch.no_grad():
        h1, c1 = agent._lstm_step(x, h, c)
        lin = torch.nn.functional.linear
        if amp:
            gates = (lin(x, lstm.weight_ih_l0).float() + lin(h, lstm.weight_hh_l0).float()
                     + (lstm.bias_ih_l0 + lstm.bias_hh_l0))
        else:
            gates = torch.addmm(lstm.bias_ih_l0 + lstm.bias_hh_l0, x, lstm.weight_ih_l0.t())
            gates = gates.addmm_(h, lstm.weight_hh_l0.t())
    i, f, g, o = gates.chunk(4, 1)
    c_want = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    assert torch.equal(c1, c_want)
    assert torch.equal(h1, torch.sigmoid(o) * torch.tanh(c_want))
