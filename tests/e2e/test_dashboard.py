"""The web dashboard end to end: Debian's Chromium, driven by Playwright, opens `drover
dashboard` (the local proxy with a kubeconfig's credentials), which reaches the operator
through the Kubernetes API server as the aggregated API. What the browser shows is checked
against the cluster (TaskRuns, their status), and what each identity may do against RBAC.

Screenshots of each page go to the test's temporary directory (and to
$DROVER_SCREENSHOTS, when set: docs/images/ holds three of them).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding
from lightkube.types import PatchType
from playwright.sync_api import Browser, Page, expect

from drover_operator.kube import TaskRunResource
from tests.conftest import E2ECluster
from tests.e2e.aggregated_support import TAKES_TURNS, Served, serve_aggregated_api
from tests.e2e.dashboard_support import Dashboard, Viewer, browser
from tests.e2e.identities import kubeconfig, rule, service_account
from tests.e2e.operator_support import run, task, wait_phase

pytestmark = [pytest.mark.e2e, TAKES_TURNS]

TASKS = "tests.e2e.dashboard_tasks"
# What the browser shows is awaited (never slept on); on a loaded machine a page and its
# live update can take longer than Playwright's default 5 seconds.
expect.set_options(timeout=60_000)


def sdk_task(cluster: E2ECluster, namespace: str, name: str, function: str, **spec: Any) -> None:
    task(
        cluster.client,
        namespace,
        name,
        {
            "image": "busybox",
            "entrypoint": f"{TASKS}:{function}",
            "retry": {"maxAttempts": 1},
            **spec,
        },
    )


@pytest.fixture(scope="module")
def served(cluster: E2ECluster, drover_crds: None) -> Iterator[Served]:
    with serve_aggregated_api(cluster, "dash", namespaces=2) as served:
        for ns in served.namespaces:
            sdk_task(cluster, ns, "ticks", "ticks", concurrency={"limit": 5})
            sdk_task(cluster, ns, "sync", "sync", concurrency={"limit": 3})
            sdk_task(cluster, ns, "child", "child")
            sdk_task(cluster, ns, "parent", "parent")
            sdk_task(cluster, ns, "approval", "approval")
        yield served


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    yield from browser()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $DROVER_SCREENSHOTS, else the test's temporary directory."""
    chosen = os.environ.get("DROVER_SCREENSHOTS")
    where = Path(chosen) if chosen else tmp_path_factory.mktemp("dashboard-screenshots")
    where.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {where}")
    return where


@pytest.fixture(scope="module")
def admin(cluster: E2ECluster, served: Served, chromium: Browser) -> Iterator[Viewer]:
    """The cluster's administrator (the admin kubeconfig's client certificate)."""
    dashboard = Dashboard(cluster, cluster.kubeconfig, served.namespace)
    viewer = Viewer(chromium, dashboard)
    yield viewer
    viewer.close()
    dashboard.stop()
    assert viewer.violations == []


@pytest.fixture(scope="module")
def reader(
    cluster: E2ECluster, served: Served, chromium: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Viewer]:
    """A ServiceAccount that may read runs and tokens in the first namespace only (as
    drover-viewer grants), nothing in the second."""
    ns = served.namespace
    bearer = service_account(
        cluster,
        ns,
        "dashboard-reader",
        [
            rule("drover.dev", ["tasks", "taskruns", "waitpoints"], ["get", "list", "watch"]),
            rule("api.drover.dev", ["taskruns", "taskruns/logs", "waitpoints"], ["get", "list"]),
        ],
    )
    # The dashboard's paths through the API server (cluster-scoped, as in the chart's
    # drover-viewer): what the viewer may see and do is then decided by the operator.
    name = f"dashboard-ui-{ns}"
    client = cluster.client
    client.create(
        ClusterRole(
            metadata=ObjectMeta(name=name),
            rules=[rule("api.drover.dev", ["ui", "ui/*"], ["get", "create"])],
        )
    )
    client.create(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=name),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
            subjects=[Subject(kind="ServiceAccount", name="dashboard-reader", namespace=ns)],
        )
    )
    path = kubeconfig(cluster, bearer, tmp_path_factory.mktemp("reader") / "kubeconfig")
    dashboard = Dashboard(cluster, path, ns)
    viewer = Viewer(chromium, dashboard)
    try:
        yield viewer
    finally:
        viewer.close()
        dashboard.stop()
        client.delete(ClusterRoleBinding, name)
        client.delete(ClusterRole, name)
    assert viewer.violations == []


def taskruns(cluster: E2ECluster, namespace: str) -> dict[str, Any]:
    found = cluster.client.list(TaskRunResource, namespace=namespace)
    return {r.metadata.name: r for r in found if r.metadata is not None and r.metadata.name}


def rows(page: Page) -> list[str]:
    return [
        str(n)
        for n in page.locator("#runs tr.run").evaluate_all("rs => rs.map(r => r.dataset.name)")
    ]


def test_runs_list_shows_runs_filters_them_and_updates_live(
    cluster: E2ECluster, served: Served, admin: Viewer, shots: Path
) -> None:
    ns = served.namespace
    names = [f"alpha-{secrets.token_hex(2)}", f"beta-{secrets.token_hex(2)}"]
    for name in names:
        run(cluster.client, ns, name, "sync", payload={"customer": name}, tags={"team": "web"})
    failing = f"gamma-{secrets.token_hex(2)}"
    run(cluster.client, ns, failing, "child", payload={"y": 1})  # no "x": it fails
    for name in names:
        wait_phase(cluster.client, ns, name, "Succeeded")
    wait_phase(cluster.client, ns, failing, "Failed")

    page = admin.open(f"runs?namespace={ns}")
    expect(page.locator("#runs tr.run")).to_have_count(3)
    assert set(rows(page)) == {*names, failing}
    expect(page.locator(f"#runs tr.run[data-name='{failing}'] .phase")).to_have_text("Failed")
    page.screenshot(path=shots / "runs.png", full_page=True)

    # Filters: by search, by phase, by tag, by Task.
    page.fill("input[name=search]", "alpha")
    page.click("#filters button[type=submit]")
    expect(page.locator("#runs tr.run")).to_have_count(1)
    assert rows(page) == [names[0]]
    page = admin.open(f"runs?namespace={ns}&phase=Failed")
    expect(page.locator("#runs tr.run")).to_have_count(1)
    assert rows(page) == [failing]
    page = admin.open(f"runs?namespace={ns}&tag=team%3Dweb&task=sync")
    expect(page.locator("#runs tr.run")).to_have_count(2)
    page = admin.open(f"runs?namespace={ns}&task=parent")
    expect(page.locator("#runs .empty")).to_have_text("No runs.")

    # A new run appears without a reload, and its phase changes as it runs.
    page = admin.open(f"runs?namespace={ns}")
    expect(page.locator("#runs tr.run")).to_have_count(3)
    page.evaluate("window.loadedOnce = true")
    late = f"delta-{secrets.token_hex(2)}"
    run(cluster.client, ns, late, "sync", payload={"customer": "late"})
    expect(page.locator(f"#runs tr.run[data-name='{late}']")).to_have_count(1)
    expect(page.locator(f"#runs tr.run[data-name='{late}'] .phase")).to_have_text(
        "Succeeded", timeout=120_000
    )
    assert page.evaluate("window.loadedOnce") is True


def test_run_detail_streams_new_log_lines_and_a_permitted_user_cancels_and_replays(
    cluster: E2ECluster, served: Served, admin: Viewer, shots: Path
) -> None:
    ns = served.namespace
    name = f"ticks-{secrets.token_hex(2)}"
    run(cluster.client, ns, name, "ticks", payload={"n": 600})
    wait_phase(cluster.client, ns, name, "Running")
    page = admin.open(f"run?namespace={ns}&name={name}")
    expect(page.locator("#phase")).to_have_text("Running")
    page.evaluate("window.loadedOnce = true")
    loaded = page.locator("#logs .line .msg").all_inner_texts()
    last = max((int(t.split()[1]) for t in loaded if re.fullmatch(r"tick \d+", t)), default=-1)
    # Lines logged after the page loaded arrive over the event stream.
    later = page.locator("#logs .line .msg").filter(has_text=re.compile(f"^tick {last + 3}$"))
    expect(later).to_have_count(1)
    assert page.evaluate("window.loadedOnce") is True
    # Search hides the lines that do not match.
    page.fill("#log-search", "tick 1")
    assert all(
        "tick 1" in text for text in page.locator("#logs .line:visible .msg").all_inner_texts()
    )
    page.fill("#log-search", "")
    page.screenshot(path=shots / "run-live.png", full_page=True)

    page.click("#cancel")
    expect(page.locator("#action-result")).to_contain_text(f"Cancel requested for {name}")
    wait_phase(cluster.client, ns, name, "Canceled")
    expect(page.locator("#phase")).to_have_text("Canceled", timeout=60_000)
    assert page.evaluate("window.loadedOnce") is True

    # Replay with an edited payload: a new TaskRun of the same Task, with that payload.
    page.fill("#replay-payload", '{"n": 1, "edited": "yes <b>"}')
    page.click("#replay")
    link = page.locator("#action-result a")
    expect(link).to_have_count(1)
    replayed = link.inner_text()
    assert replayed != name
    created = taskruns(cluster, ns)[replayed]
    assert created.spec["payload"] == {"n": 1, "edited": "yes <b>"}
    assert created.spec["taskRef"]["name"] == "ticks"
    link.click()
    expect(page.locator("#payload")).to_contain_text('"edited": "yes <b>"')  # escaped, shown
    wait_phase(cluster.client, ns, replayed, "Succeeded")
    expect(page.locator("#phase")).to_have_text("Succeeded", timeout=60_000)


def test_run_detail_shows_steps_waterfall_and_children(
    cluster: E2ECluster, served: Served, admin: Viewer, shots: Path
) -> None:
    ns = served.namespace
    name = f"parent-{secrets.token_hex(2)}"
    run(cluster.client, ns, name, "parent", payload={"n": 2})
    wait_phase(cluster.client, ns, name, "Succeeded", timeout=240)
    page = admin.open(f"run?namespace={ns}&name={name}")
    expect(page.locator("#phase")).to_have_text("Succeeded")
    steps = page.locator("#steps tr.step td:nth-child(2)").all_inner_texts()
    assert "fetch" in steps
    children = page.locator("#children tr.child a").all_inner_texts()
    statuses = {n: r.status for n, r in taskruns(cluster, ns).items()}
    assert len(children) == 2
    assert all(statuses[c]["phase"] == "Succeeded" for c in children)
    assert all(statuses[c].get("parent") == name for c in children)
    expect(page.locator("#waterfall tr.bar-step")).not_to_have_count(0)
    expect(page.locator("#waterfall tr.bar-child")).to_have_count(2)
    expect(page.locator("#waterfall tr.bar-attempt")).not_to_have_count(0)
    expect(page.locator("#output")).to_contain_text("2")
    page.screenshot(path=shots / "run-detail.png", full_page=True)
    page.locator("#children tr.child a").first.click()
    expect(page.locator("#parent")).to_have_text(name)


def test_tasks_and_tokens_pages_and_completing_a_token(
    cluster: E2ECluster, served: Served, admin: Viewer, shots: Path
) -> None:
    ns = served.namespace
    name = f"approve-{secrets.token_hex(2)}"
    run(cluster.client, ns, name, "approval")
    wait_phase(cluster.client, ns, name, "Waiting")
    page = admin.open(f"tokens?namespace={ns}")
    row = page.locator("#tokens tr.token").filter(has_text=name)
    expect(row).to_have_count(1)
    page.screenshot(path=shots / "tokens.png", full_page=True)
    row.locator("textarea").fill('{"approved": true}')
    row.locator("button").click()
    expect(row.locator(".result")).to_contain_text("Completed token")
    wait_phase(cluster.client, ns, name, "Succeeded", timeout=180)
    page = admin.open(f"run?namespace={ns}&name={name}")
    expect(page.locator("#output")).to_contain_text('"approved": true')

    page = admin.open(f"tasks?namespace={ns}&window=1h")
    sync_row = page.locator("#tasks tr.task[data-name='sync']")
    expect(sync_row).to_have_count(1)
    cells = sync_row.locator("td").all_inner_texts()
    assert cells[2] == "3"  # the limit
    assert int(cells[6]) >= 1  # succeeded in the window
    assert cells[9].endswith("s") and cells[11].endswith("s")  # p50, p99
    expect(sync_row.locator(".duration-chart .uplot")).to_have_count(1)
    page.screenshot(path=shots / "tasks.png", full_page=True)


def test_a_read_only_user_is_refused_with_a_message_and_nothing_changes(
    cluster: E2ECluster, served: Served, reader: Viewer
) -> None:
    ns = served.namespace
    name = f"guarded-{secrets.token_hex(2)}"
    run(cluster.client, ns, name, "ticks", payload={"n": 600})
    wait_phase(cluster.client, ns, name, "Running")
    before = set(taskruns(cluster, ns))
    page = reader.open(f"run?namespace={ns}&name={name}")
    expect(page.locator("#phase")).to_have_text("Running")

    page.click("#cancel")
    result = page.locator("#action-result")
    expect(result).to_contain_text("Refused (403)")
    expect(result).to_contain_text(
        f"system:serviceaccount:{ns}:dashboard-reader cannot patch taskruns.drover.dev"
    )
    page.fill("#replay-payload", '{"n": 1}')
    page.click("#replay")
    expect(result).to_contain_text("cannot create taskruns.drover.dev")

    # Nothing changed: no cancel asked, no new run, still running.
    current = taskruns(cluster, ns)
    assert set(current) == before
    assert not current[name].spec.get("cancel")
    assert current[name].status["phase"] == "Running"
    cluster.client.patch(
        TaskRunResource, name, {"spec": {"cancel": True}}, namespace=ns, patch_type=PatchType.MERGE
    )
    wait_phase(cluster.client, ns, name, "Canceled")


def test_a_user_without_list_in_a_namespace_sees_nothing_from_it(
    cluster: E2ECluster, served: Served, reader: Viewer
) -> None:
    ns, other = served.namespaces
    hidden = f"hidden-{secrets.token_hex(2)}"
    run(cluster.client, other, hidden, "sync", payload={"customer": "secret-customer"})
    wait_phase(cluster.client, other, hidden, "Succeeded")

    for path in (
        f"runs?namespace={other}",
        "runs",  # every namespace: needs list at the cluster scope
        f"run?namespace={other}&name={hidden}",
        f"tasks?namespace={other}",
        f"tokens?namespace={other}",
    ):
        page = reader.open(path)
        expect(page.locator("#problem")).to_contain_text("cannot")
        content = page.content()
        assert hidden not in content or path.endswith(hidden)
        assert "secret-customer" not in content
        assert page.locator("#runs tr.run").count() == 0
    # Its own namespace is visible.
    page = reader.open(f"runs?namespace={ns}")
    expect(page.locator("#runs")).to_have_count(1)
    events = page.request.get(reader.dashboard.page_url(f"runs-events?namespace={other}"))
    assert events.status == 403 and b"cannot list" in events.body()
    table = page.request.get(reader.dashboard.page_url(f"runs-table?namespace={other}"))
    assert table.status == 403 and hidden not in table.text()
