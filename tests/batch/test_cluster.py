"""The Ray engine joining a two-node cluster (simulated in one process, 1 CPU per node) with --address."""

from __future__ import annotations

import pytest

from pocketqa.batch.engine import run_batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_same_answers_on_two_nodes(two_nodes, tiny_bert_dir, tmp_path, kit):
    import ray

    rows = kit.question_rows()
    kit.write_rows(tmp_path / "in" / "a.parquet", rows[:6])
    kit.write_rows(tmp_path / "in" / "b.parquet", rows[6:])
    # one actor (1 CPU) and Ray Data's reader (1 CPU): both nodes busy
    summary = run_batch(tmp_path / "in", tmp_path / "out", model=str(tiny_bert_dir), address=two_nodes.address,
                        answerer_kwargs={"threads": 1, **kit.WINDOW}, actors=1, rows_per_batch=3, progress=False)
    assert summary["written"] == 2 and summary["rows"] == len(rows)
    assert not ray.is_initialized()  # the command left the cluster; the cluster itself runs on
    kit.assert_same_answers(kit.read_outputs(tmp_path / "out"), kit.reference_records(tiny_bert_dir, rows, **kit.WINDOW))


def test_too_few_cpus_is_one_clear_error(two_nodes, tmp_path, kit):
    import ray

    from pocketqa.errors import PocketQAError

    kit.write_rows(tmp_path / "in" / "a.parquet", kit.question_rows())
    with pytest.raises(PocketQAError, match="has 2 CPUs but the actors and the reader need 3"):
        run_batch(tmp_path / "in", tmp_path / "out", address=two_nodes.address, actors=2, progress=False)
    assert not ray.is_initialized()
