"""`python -m drover_localcluster.nodeagent CONFIG.json`: run one node agent."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

from drover_localcluster.nodeagent.agent import NodeAgent
from drover_localcluster.nodeagent.config import AgentConfig


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m drover_localcluster.nodeagent CONFIG.json")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    config = AgentConfig.from_json(json.loads(Path(sys.argv[1]).read_text()))
    asyncio.run(NodeAgent(config).run())


if __name__ == "__main__":
    main()
