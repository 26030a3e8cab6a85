#!/usr/bin/env python3
"""Trim Klaviyo's official OpenAPI spec to the operations klsync uses.

Usage: python3 vendor/klaviyo-openapi/trim.py /path/to/klaviyo/openapi/stable.json

Keeps every path under the prefixes below (minus flows, campaigns, push tokens and conversations,
which klsync does not manage) and the transitive closure of the components they reference, byte-for-
byte as Klaviyo wrote them. The output is vendor/klaviyo-openapi/klaviyo-subset.json; the contract
tests (through tests/support/openapi.rs) validate klsync's requests and the emulator's responses against it.
"""
import json
import sys
from pathlib import Path

PREFIXES = ["/api/profiles", "/api/profile-import", "/api/profile-bulk-import-jobs", "/api/lists",
            "/api/segments", "/api/tags", "/api/tag-groups"]
SKIP = ["flow", "campaign", "push-token", "conversation"]


def refs(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                refs(value, found)
    elif isinstance(node, list):
        for item in node:
            refs(item, found)


def main():
    spec = json.loads(Path(sys.argv[1]).read_text())
    paths = {
        p: ops for p, ops in spec["paths"].items()
        if any(p == w or p.startswith(w + "/") for w in PREFIXES) and not any(s in p for s in SKIP)
    }
    wanted, todo = set(), set()
    refs(paths, todo)
    while todo:
        ref = todo.pop()
        if ref in wanted:
            continue
        wanted.add(ref)
        parts = ref.lstrip("#/").split("/")
        node = spec
        for part in parts:
            node = node[part]
        refs(node, todo)
    components = {}
    for ref in sorted(wanted):
        _, section, name = ref.lstrip("#/").split("/")
        components.setdefault(section, {})[name] = spec["components"][section][name]
    out = {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "x-klsync-source": {
            "repository": "https://github.com/klaviyo/openapi",
            "path": "openapi/stable.json",
            "commit": "f0a30ba41254904dc410d84ca497df68f8872276",
            "license": "MIT License, Copyright (c) 2022 Klaviyo (see LICENSE beside this file)",
            "trimmed_by": "vendor/klaviyo-openapi/trim.py",
        },
        "servers": spec.get("servers", []),
        "paths": paths,
        "components": components,
    }
    target = Path(__file__).with_name("klaviyo-subset.json")
    target.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    print(f"{len(paths)} paths, {sum(len(v) for v in components.values())} components -> {target}")


if __name__ == "__main__":
    main()
