"""The chunked scorer equals a dense brute-force top-N for every chunk size, dtype and path."""

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys import score
from recsys.score import (
    BYTES_PER_SCORE,
    FactorScorer,
    SeenMatrix,
    chunk_rows,
    resolve_device,
    top_n,
)


def _case(seed: int = 0, num_users: int = 57, num_items: int = 40, max_seen: int = 12):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    user = torch.randn(num_users, 8, generator=gen)
    # Item norms spread like trained factors (popular items larger): the half-precision
    # error bound uses the largest one.
    item = torch.randn(num_items, 8, generator=gen) * torch.exp(
        0.3 * torch.randn(num_items, 1, generator=gen)
    )
    seen_sets = [
        sorted(set(rng.choice(num_items, rng.integers(0, max_seen), replace=True).tolist()))
        for _ in range(num_users)
    ]
    seen_sets[3] = list(range(num_items))  # has seen everything
    seen_sets[4] = list(range(num_items - 4))  # fewer unseen items than N
    indptr = np.zeros(num_users + 1, np.int64)
    indptr[1:] = np.cumsum([len(s) for s in seen_sets])
    seen = SeenMatrix(indptr, np.concatenate([np.asarray(s, np.int32) for s in seen_sets]))
    return user, item, seen, seen_sets


def _dense(user, item, seen_sets):
    dense = (user.double() @ item.double().T).float()  # exact to fp32 rounding
    for q, s in enumerate(seen_sets):
        dense[q, s] = -np.inf
    return dense


def _assert_top_n(chunks, dense, n, queries, seen_sets, tol=1e-5):
    """Every query's list is a true top-n of `dense` up to ties: same sorted values (to fp32
    rounding), each key's own score equal to its listed value, no seen key, no repeat."""
    got = np.concatenate([c.query_idx for c in chunks])
    assert got.tolist() == list(queries)
    ref_values, _ = torch.topk(dense, min(n, dense.shape[1]), dim=1)
    for chunk in chunks:
        for row, q in enumerate(chunk.query_idx):
            finite = torch.isfinite(ref_values[q])
            count = int(chunk.counts[row])
            assert count == int(finite.sum())
            keys = chunk.key_idx[row, :count].astype(np.int64)
            values = chunk.score[row, :count]
            np.testing.assert_allclose(values, ref_values[q][finite].numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(dense[q, keys].numpy(), values, rtol=tol, atol=tol)
            assert len(set(keys.tolist())) == count
            assert not set(keys.tolist()) & set(seen_sets[q])


@pytest.mark.parametrize("budget", [1, 40 * BYTES_PER_SCORE * 5, 40 * BYTES_PER_SCORE * 16, 2**30])
@pytest.mark.parametrize("subset", [False, True])
def test_chunked_equals_dense(budget: int, subset: bool) -> None:
    user, item, seen, seen_sets = _case()
    queries = np.array([0, 3, 4, 9, 10, 11, 40, 56]) if subset else np.arange(57)
    chunks = list(top_n(FactorScorer(user, item), 10, seen, queries=queries, budget_bytes=budget))
    _assert_top_n(chunks, _dense(user, item, seen_sets), 10, queries, seen_sets)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("budget", [2000 * BYTES_PER_SCORE * 3, 2000 * BYTES_PER_SCORE * 64])
@pytest.mark.parametrize("workers", [1, 2])
def test_large_catalogue_equals_dense_for_every_dtype_chunk_and_worker(dtype, budget, workers):
    user, item, seen, seen_sets = _case(seed=1, num_users=61, num_items=2003, max_seen=60)
    seen_sets[5] = list(range(1, 2003, 2)) + [0]  # many seen; unseen only every other item
    seen = _seen(seen_sets)
    scorer = FactorScorer(user, item, dtype)
    assert scorer.approximate == (dtype != torch.float32)
    queries = np.arange(61)
    chunks = list(top_n(scorer, 10, seen, budget_bytes=budget, workers=workers))
    _assert_top_n(chunks, _dense(user, item, seen_sets), 10, queries, seen_sets)


def test_users_with_fewer_unseen_items_than_n_get_exactly_those() -> None:
    user, item, _, seen_sets = _case(seed=2, num_users=12, num_items=2000)
    seen_sets[0] = list(range(1995))  # 5 unseen < N
    seen_sets[1] = list(range(2000))  # none unseen
    seen_sets[2] = [i for i in range(2000) if i % 400]  # 5 unseen, spread out
    for dtype in (torch.float32, torch.bfloat16):
        chunks = list(top_n(FactorScorer(user, item, dtype), 10, _seen(seen_sets)))
        _assert_top_n(chunks, _dense(user, item, seen_sets), 10, range(12), seen_sets)
        assert chunks[0].counts[:3].tolist() == [5, 0, 5]


def _seen(seen_sets):
    indptr = np.zeros(len(seen_sets) + 1, np.int64)
    indptr[1:] = np.cumsum([len(s) for s in seen_sets])
    return SeenMatrix(indptr, np.concatenate([np.asarray(s, np.int32) for s in seen_sets]))


@pytest.mark.parametrize("num_keys", [1000, 1007, 4096])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_certified_selection_is_the_fp32_top_k_with_ties_and_minus_inf(num_keys, k) -> None:
    """A bf16 block of tied and untied rows: the listed keys are the fp32 top-k of the
    rescored scores, and the compiled and torch paths agree bit for bit."""
    gen = torch.Generator().manual_seed(num_keys + k)
    user = torch.randint(-3, 4, (9, 8), generator=gen).float()  # integer scores: many ties
    user[1] = torch.randn(8, generator=gen)  # no ties
    item = torch.randint(-2, 3, (num_keys, 8), generator=gen).float()
    item[-1] = 50.0  # the best key is the last one
    seen_sets = [[] for _ in range(9)]
    seen_sets[2] = list(range(num_keys - k + 1))  # k-1 unseen
    seen_sets[3] = list(range(num_keys))  # none unseen
    seen_sets[4] = list(range(0, num_keys, 3))
    scorer = FactorScorer(user, item, torch.bfloat16)
    rows, block = torch.arange(9), np.arange(9)
    dense = _dense(user, item, seen_sets)
    lists = []
    for kernel in (True, False) if score.kernel_available() else (False,):
        with _kernel_switched(kernel):
            seen = score._SeenOnDevice(_seen(seen_sets), torch.device("cpu"), num_keys)
            lists.append(score.select_certified(scorer, scorer.score_block(rows), k, seen,
                                                block, rows))  # fmt: skip
    for values, keys, counts in lists:
        assert counts.tolist() == [min(k, int(torch.isfinite(dense[q]).sum())) for q in range(9)]
        for q in range(9):
            want = np.lexsort((np.arange(num_keys), -dense[q].double().numpy()))[: counts[q]]
            assert keys[q, : counts[q]].tolist() == want.tolist()  # exact: ties to lower key
            np.testing.assert_allclose(values[q, : counts[q]], dense[q, want], rtol=1e-6)
    for got in lists[1:]:
        for a, b in zip(lists[0], got, strict=True):
            assert np.array_equal(a, b)


def test_half_precision_block_stays_within_the_error_bound() -> None:
    gen = torch.Generator().manual_seed(3)
    user = torch.randn(300, 64, generator=gen) * torch.exp(torch.randn(300, 1, generator=gen))
    item = torch.randn(5000, 64, generator=gen) * torch.exp(torch.randn(5000, 1, generator=gen))
    exact = user.double() @ item.double().T
    for dtype in (torch.bfloat16, torch.float16):
        scorer = FactorScorer(user, item, dtype)
        rows = torch.arange(300)
        block = scorer.score_block(rows).double()
        # the block's own output rounding is what certified_cut adds on top
        rounding = score._ROUNDOFF[scorer.dtype] * block.abs() / (1 - score._ROUNDOFF[scorer.dtype])
        error = (block - exact).abs() - rounding
        assert (error <= scorer.error_bound(rows).double().unsqueeze(1)).all()


def test_float16_on_cpu_runs_as_bfloat16_and_huge_factors_as_float32() -> None:
    user, item, _, _ = _case()
    assert FactorScorer(user, item, torch.float16).dtype == torch.bfloat16
    assert FactorScorer(user * 1e20, item * 1e20, torch.bfloat16).dtype == torch.float32


def test_user_with_everything_seen_gets_no_rows_and_short_lists_stay_short() -> None:
    user, item, seen, _ = _case()
    (chunk,) = list(top_n(FactorScorer(user, item), 10, seen))
    assert chunk.counts[3] == 0
    assert chunk.counts[4] == 4


def test_n_larger_than_catalogue() -> None:
    user, item, _, _ = _case(num_items=5)
    (chunk,) = list(top_n(FactorScorer(user, item), 10, SeenMatrix.empty(57)))
    assert chunk.key_idx.shape == (57, 5)
    assert (chunk.counts == 5).all()


def test_stopping_early_with_workers_does_not_hang() -> None:
    user, item, seen, _ = _case(num_users=500)
    chunks = top_n(FactorScorer(user, item), 5, _seen([[]] * 500), budget_bytes=1, workers=2)
    first = next(chunks)
    chunks.close()
    assert first.query_idx.tolist() == [0]
    assert torch.get_num_threads() >= 1


def test_chunk_rows_follows_budget() -> None:
    assert chunk_rows(1000, torch.device("cpu"), 1000 * BYTES_PER_SCORE * 7) == 7
    assert chunk_rows(1000, torch.device("cpu"), 1) == 1
    assert chunk_rows(20_000, torch.device("cpu")) == score.CPU_CHUNK_ROWS
    # blocks of about CPU_BLOCK_BYTES, 64 to 256 queries
    assert score.cpu_block_rows(20_000, torch.float32) * 20_000 * 4 <= score.CPU_BLOCK_BYTES
    assert score.cpu_block_rows(20_000, torch.bfloat16) == 256
    assert score.cpu_block_rows(10**6, torch.float32) == 64
    # a huge catalogue: the memory budget, not the row count, sets the chunk
    assert chunk_rows(10**7, torch.device("cpu")) == max(
        1, score.DEFAULT_CPU_BUDGET // (10**7 * BYTES_PER_SCORE)
    )


def test_gpu_chunk_follows_free_memory(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 80 * 2**30))
    rows = chunk_rows(100_000, torch.device("cuda"))
    assert rows == int(10 * 2**30 * score.GPU_BUDGET_FRACTION) // (100_000 * BYTES_PER_SCORE)


def test_cuda_request_without_cuda_falls_back_to_cpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cuda") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_half_precision_equals_cpu_float32(dtype) -> None:
    user, item, _, seen_sets = _case(seed=4, num_users=200, num_items=3000, max_seen=80)
    seen = _seen(seen_sets)
    cuda = torch.device("cuda")
    chunks = list(top_n(FactorScorer(user.to(cuda), item.to(cuda), dtype), 10, seen, device=cuda))
    _assert_top_n(chunks, _dense(user, item, seen_sets), 10, range(200), seen_sets)


# ------------------------------------------------- the compiled selection and its torch twin


def _awkward_blocks(seed: int):
    """Score blocks that stress the order: ties, -0/+0, NaN, +-inf, short rows."""
    gen = torch.Generator().manual_seed(seed)
    yield torch.randn(7, 3001, generator=gen)
    yield torch.randint(0, 4, (7, 2048), generator=gen).float()  # massive exact ties
    yield torch.randint(-1, 2, (5, 999), generator=gen).float() * 0.0  # only -0 and +0
    noisy = torch.randn(9, 1500, generator=gen)
    noisy[torch.rand(9, 1500, generator=gen) < 0.05] = float("nan")
    noisy[torch.rand(9, 1500, generator=gen) < 0.30] = float("-inf")
    noisy[torch.rand(9, 1500, generator=gen) < 0.01] = float("inf")
    noisy[3] = float("-inf")  # nothing selectable
    noisy[4, 5:] = float("-inf")  # 5 selectable
    yield noisy
    yield torch.randn(3, 40, generator=gen)  # a catalogue smaller than k


@pytest.mark.skipif(not score.kernel_available(), reason="compiled kernel not built")
@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_compiled_selection_equals_the_torch_selection_exactly(k) -> None:
    for scores in _awkward_blocks(k):
        kk = min(k, scores.shape[1])
        block, rows = np.arange(len(scores)), torch.arange(len(scores))
        values, keys, counts = score.select_top_k(scores.clone(), kk, None, block, rows)
        ref_values, ref_keys, ref_counts = score.select_top_k_torch(scores.clone(), kk)
        assert np.array_equal(counts, ref_counts.numpy())
        assert np.array_equal(keys, ref_keys.numpy())
        assert np.array_equal(values, ref_values.numpy(), equal_nan=True)


def test_selection_order_is_best_first_nan_first_ties_to_the_lower_key() -> None:
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([[1.0, 3.0, nan, 3.0, -inf, inf, -0.0, 0.0, nan, 2.0]])
    values, keys, counts = score.select_top_k_torch(scores, 8)
    assert keys[0].tolist() == [2, 8, 5, 1, 3, 9, 0, 6]
    assert counts.tolist() == [8]
    values, keys, counts = score.select_top_k_torch(scores, 10)
    assert counts.tolist() == [9]  # -inf is never listed
    assert keys[0, 9] == 0 and values[0, 9] == float("-inf")  # an empty slot


def test_the_torch_selection_is_used_when_the_kernel_is_missing(monkeypatch) -> None:
    user, item, seen, seen_sets = _case(seed=5, num_users=40, num_items=3000, max_seen=100)
    seen = _seen(seen_sets)
    with_kernel = list(top_n(FactorScorer(user, item), 25, seen))
    monkeypatch.setattr(score, "kernel_available", lambda: False)
    without = list(top_n(FactorScorer(user, item), 25, seen))
    _assert_top_n(without, _dense(user, item, seen_sets), 25, range(40), seen_sets)
    for a, b in zip(with_kernel, without, strict=True):
        assert np.array_equal(a.key_idx, b.key_idx) and np.array_equal(a.counts, b.counts)
        assert np.array_equal(a.score, b.score)


def test_compiled_kernel_is_built_where_a_c_compiler_exists() -> None:
    import shutil
    import sysconfig

    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the torch selection is the one in use")
    assert score.kernel_available(), "recsys/_topk.c is not built: run make install"


@pytest.mark.parametrize("kernel", [True, False])
def test_seen_matrix_out_of_range_is_refused_not_written(kernel) -> None:
    user, item, _, _ = _case(num_items=300)
    bad = SeenMatrix(np.array([0, 1] + [1] * 56, np.int64), np.array([300], np.int32))
    with _kernel_switched(kernel), pytest.raises(ValueError, match="seen key index out of range"):
        list(top_n(FactorScorer(user, item), 5, bad))
    broken = SeenMatrix(np.array([0, 5] + [5] * 56, np.int64), np.array([1], np.int32))
    with _kernel_switched(kernel), pytest.raises(ValueError, match="indptr"):
        list(top_n(FactorScorer(user, item), 5, broken))


# ------------------------------------------- issue 13, item 1: every row left to dense


def _whole_groups_case():
    """Issue 13's reproduction as scores: 3 users x 800 items (a multiple of 8), popularity
    scores with massive ties; user 0 has seen every item, users 1-2 the 50 popular ones."""
    popularity = torch.where(torch.arange(800) < 50, np.log1p(3.0), np.log1p(1.0)).float()
    user = torch.ones(3, 1)
    item = popularity.unsqueeze(1)  # (800, 1): score = popularity for every user
    seen_sets = [list(range(800)), list(range(50)), list(range(50))]
    return user, item, seen_sets


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", [True, False])
def test_a_chunk_of_only_dense_rows_on_whole_groups_does_not_crash(dtype, kernel, monkeypatch):
    if not kernel:
        monkeypatch.setattr(score, "kernel_available", lambda: False)
    user, item, seen_sets = _whole_groups_case()
    for k in (10, 20):
        chunks = list(top_n(FactorScorer(user, item, dtype), k, _seen(seen_sets)))
        _assert_top_n(chunks, _dense(user, item, seen_sets), k, range(3), seen_sets)
        assert chunks[0].counts.tolist() == [0, k, k]
    scores = torch.full((3, 800), float("-inf"))  # nothing selectable in any row
    values, keys, counts = score.select_top_k(scores, 10, None, np.arange(3), torch.arange(3))
    assert counts.tolist() == [0, 0, 0] and (values == float("-inf")).all()


def test_nightly_with_a_catalogue_of_whole_groups_and_only_tied_rows_publishes(tmp_path) -> None:
    """Issue 13's CLI reproduction: it exited 1 with 'index 0 is out of bounds'."""
    from tests.conftest import read_table, run_cli

    rows = ["user_id,item_id"] + [f"1,{i}" for i in range(1, 801)]
    rows += [f"{u},{i}" for u in (2, 3) for i in range(1, 51)]
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    done = run_cli("nightly", "--interactions", "inter.csv", "--database", "r.duckdb",
                   "--model", "popularity", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lists = read_table(tmp_path / "r.duckdb", "select user_id, count(*) n from recommendations "
                       "group by user_id order by user_id")  # fmt: skip
    assert lists["user_id"].to_list() == [2, 3]  # user 1 has seen everything


# ------------------------------------------------------------------ property-based fuzzing

FUZZ_EXAMPLES = 250  # about 10 s on 2 cores; every example runs top_n and a dense reference
fuzz_counter = {"examples": 0}


@st.composite
def fuzz_cases(draw):
    """A random scoring problem: catalogue sizes with and without a tail past whole groups of
    8, k above and below the unseen count, tied or continuous scores, empty and full rows."""
    num_items = draw(st.one_of(st.integers(1, 700), st.integers(1, 90).map(lambda g: 8 * g)))
    num_users = draw(st.integers(1, 30))
    dim = draw(st.integers(1, 6))
    ties = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if ties:  # small integers / 2: every product and sum exact, scores tie massively
        user = torch.randint(-2, 3, (num_users, dim), generator=gen).float() / 2
        item = torch.randint(-1, 2, (num_items, dim), generator=gen).float() / 2
    else:
        user = torch.randn(num_users, dim, generator=gen)
        item = torch.randn(num_items, dim, generator=gen) * torch.exp(
            torch.randn(num_items, 1, generator=gen)
        )
    seen_sets = []
    for _ in range(num_users):
        kind = draw(st.sampled_from(["empty", "some", "most", "all"]))
        size = {"empty": 0, "some": num_items // 10, "most": max(0, num_items - 3),
                "all": num_items}[kind]  # fmt: skip
        picked = torch.randperm(num_items, generator=gen)[:size]
        seen_sets.append(sorted(picked.tolist()))
    k = draw(st.integers(1, num_items + 10))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    workers = draw(st.integers(1, 3))
    rows_per_chunk = draw(st.integers(1, num_users))
    subset = draw(st.booleans())
    queries = (
        np.array(sorted(draw(st.sets(st.integers(0, num_users - 1), min_size=1))))
        if subset
        else np.arange(num_users)
    )
    kernel = draw(st.booleans())
    return user, item, seen_sets, k, dtype, workers, rows_per_chunk, queries, ties, kernel


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(fuzz_cases())
def test_fuzz_top_n_equals_a_dense_reference(case) -> None:
    user, item, seen_sets, k, dtype, workers, rows_per_chunk, queries, ties, kernel = case
    fuzz_counter["examples"] += 1
    num_items = item.shape[0]
    budget = rows_per_chunk * num_items * BYTES_PER_SCORE
    with _kernel_switched(kernel):
        chunks = list(top_n(FactorScorer(user, item, dtype), k, _seen(seen_sets), queries=queries,
                            budget_bytes=budget, workers=workers))  # fmt: skip
    dense = _dense(user, item, seen_sets)
    _assert_top_n(chunks, dense, k, queries, seen_sets, tol=1e-4)
    for chunk in chunks:
        assert chunk.key_idx.shape[1] == min(k, num_items)
        for row, count in enumerate(chunk.counts):
            assert (np.diff(chunk.score[row, :count]) <= 0).all()  # best first
        if ties and dtype == torch.float32:  # exact scores: ties go to the lower key index
            for row, q in enumerate(chunk.query_idx):
                s = dense[q].double().numpy()
                order = np.lexsort((np.arange(num_items), -s))[: int(chunk.counts[row])]
                assert chunk.key_idx[row, : chunk.counts[row]].tolist() == order.tolist()


@contextlib.contextmanager
def _kernel_switched(on: bool):
    original = score.kernel_available
    if not on:
        score.kernel_available = lambda: False
    try:
        yield
    finally:
        score.kernel_available = original


def test_fuzz_ran_its_whole_budget() -> None:
    """Runs after the fuzz test in file order: how many cases it tried (pytest -s shows it)."""
    if fuzz_counter["examples"] == 0:
        pytest.skip("the fuzz test did not run in this session")
    print(f"\nfuzzing top_n: {fuzz_counter['examples']} cases tried")
    assert fuzz_counter["examples"] >= FUZZ_EXAMPLES


def test_auto_dtype_is_bfloat16_only_on_cpus_with_bf16_instructions_and_no_gpu(monkeypatch):
    monkeypatch.setattr(score, "native_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert score.scoring_dtype("auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert score.scoring_dtype("auto") == torch.float32  # GPU: not measured yet
    monkeypatch.setattr(score, "native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert score.scoring_dtype("auto") == torch.float32
    assert score.scoring_dtype("float16") == torch.float16
    with pytest.raises(
        score.ConfigError, match="expected one of: auto, float32, float16, bfloat16"
    ):
        score.scoring_dtype("double")
