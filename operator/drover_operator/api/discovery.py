"""Discovery documents of the aggregated API (`api.drover.dev/v1`): what the Kubernetes API
server asks before it routes requests here (and marks the APIService available)."""

from __future__ import annotations

from aiohttp import web

from drover_operator.api.state import API_GROUP, API_VERSION

_GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

# No resources are listed: the group's endpoints are actions and views on Drover's own
# `tasks` and `taskruns` (drover.dev), and a resource of the same name here would shadow
# them for `kubectl get taskruns`. They are reached by path (`kubectl create --raw`, the CLI,
# drover.Client), and authorized as the verbs on drover.dev resources.
RESOURCES: list[dict[str, object]] = []


def _group() -> dict[str, object]:
    version = {"groupVersion": _GROUP_VERSION, "version": API_VERSION}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": API_GROUP,
        "versions": [version],
        "preferredVersion": version,
    }


async def group_list(_: web.Request) -> web.Response:
    return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group()]})


async def group(_: web.Request) -> web.Response:
    return web.json_response(_group())


async def resources(_: web.Request) -> web.Response:
    return web.json_response(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": _GROUP_VERSION,
            "resources": RESOURCES,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/apis", group_list)
    app.router.add_get(f"/apis/{API_GROUP}", group)
    app.router.add_get(f"/apis/{_GROUP_VERSION}", resources)
