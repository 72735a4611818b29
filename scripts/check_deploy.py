"""Offline checks of deploy/ that need no cluster, Prometheus or container engine.

Run by scripts/check-deploy.sh (which also runs promtool, kubectl kustomize,
kubernetes-validate and systemd-analyze); each check prints one line and the script exits 1
if any failed. It checks what those tools cannot:

- every IYSGATE_ variable named anywhere in deploy/ is one src/app/config.rs defines;
- every metric name in the alert rules and the dashboard is one src/ emits (or one of the
  three names issue 14 adds), and each dashboard query is written out as a rules file for
  promtool to parse;
- every alert has a runbook page it links to, and a firing and a quiet unit test;
- each kustomization's resources, generator files and patches exist, and each patch targets
  an object of the kustomization it patches;
- no Secret is inlined: no Secret object, and secret settings only by secretKeyRef;
- the Dockerfile builds the binary without dev-tools and runs as a non-root user.

Usage: check_deploy.py REPO_ROOT DASHBOARD_RULES_OUT
"""

import json
import pathlib
import re
import sys

import yaml

# Added by issue 14 in parallel with deploy/ (deploy/README "Metrics").
NEW_METRICS = {"iysgate_data_age_seconds", "iysgate_build_info", "iysgate_grpc_requests_total"}
# Settings that hold a secret: only ever from a Secret (Kubernetes) or a root-only file.
SECRET_VARS = re.compile(r"^IYSGATE_(.*PASSWORD.*|DATABASE_URL|REDIS_URL|API_KEY)$")

failures = []


def check(ok, what, detail=""):
    print(("ok    " if ok else "FAIL  ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def emitted_metrics(root):
    """Metric names registered with the `metrics` macros anywhere in src/."""
    names = set()
    macro = re.compile(r'(?:counter|gauge|histogram)!\(\s*"(iysgate_[a-z0-9_]+)"')
    for path in (root / "src").rglob("*.rs"):
        names.update(macro.findall(path.read_text()))
    return names


def histogram_names(root):
    macro = re.compile(r'histogram!\(\s*"(iysgate_[a-z0-9_]+)"')
    names = set()
    for path in (root / "src").rglob("*.rs"):
        names.update(macro.findall(path.read_text()))
    return names


def metric_names_in(expr):
    return set(re.findall(r"\biysgate_[a-z0-9_]+", expr))


def known_metric(name, emitted, histograms):
    if name in emitted or name in NEW_METRICS:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return True
    return False


def check_env_names(root):
    config = (root / "src/app/config.rs").read_text()
    defined = set(re.findall(r'pub const ENV_\w+: &str = "(IYSGATE_\w+)"', config))
    used = {}
    for path in (root / "deploy").rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".env", ".service", ".example", ""}:
            for name in re.findall(r"\bIYSGATE_[A-Z0-9_]+\b", path.read_text()):
                used.setdefault(name, path.relative_to(root))
    unknown = {n: str(p) for n, p in used.items() if n not in defined}
    check(not unknown, f"all {len(used)} IYSGATE_ variables in deploy/ are defined in src/app/config.rs",
          ", ".join(f"{n} ({p})" for n, p in sorted(unknown.items())))


def check_rules_and_runbooks(root, emitted, histograms):
    rules = yaml.safe_load((root / "deploy/prometheus/rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    unknown = set()
    for rule in alerts:
        unknown |= {m for m in metric_names_in(rule["expr"]) if not known_metric(m, emitted, histograms)}
    check(not unknown, f"every metric in the {len(alerts)} alerts is emitted by src/ or added in issue 14",
          ", ".join(sorted(unknown)))
    missing_page, bad_link = [], []
    for rule in alerts:
        page = f"deploy/runbooks/{rule['alert']}.md"
        if not (root / page).is_file():
            missing_page.append(page)
        if rule.get("annotations", {}).get("runbook_url") != page:
            bad_link.append(rule["alert"])
    check(not missing_page, "every alert has a runbook page", ", ".join(missing_page))
    check(not bad_link, "every alert's runbook_url is its page", ", ".join(bad_link))
    names = {r["alert"] for r in alerts}
    orphans = [p.stem for p in (root / "deploy/runbooks").glob("*.md") if p.stem not in names | {"README"}]
    check(not orphans, "every runbook page belongs to an alert", ", ".join(orphans))
    tests = yaml.safe_load((root / "deploy/prometheus/tests.yml").read_text())
    firing, quiet = set(), set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    check(names <= firing, "every alert has a unit test where it fires", ", ".join(sorted(names - firing)))
    check(names <= quiet, "every alert has a unit test where it stays quiet", ", ".join(sorted(names - quiet)))


def check_dashboard(root, emitted, histograms, rules_out):
    path = root / "deploy/grafana/iysgate.json"
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        check(False, "the dashboard is valid JSON", str(e))
        return
    check(bool(dash.get("uid")) and bool(dash.get("title")), "the dashboard has a uid and a title")
    panels = dash.get("panels", [])
    ids = [p["id"] for p in panels]
    check(len(ids) == len(set(ids)), "dashboard panel ids are unique")
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    unknown, without = set(), []
    for expr in exprs:
        found = metric_names_in(expr)
        if not found:
            without.append(expr)
        unknown |= {m for m in found if not known_metric(m, emitted, histograms)}
    check(not without, "every dashboard query reads an iysgate metric", "; ".join(without))
    check(not unknown, f"every metric in the {len(exprs)} dashboard queries is emitted by src/ or added in issue 14",
          ", ".join(sorted(unknown)))
    # promtool parses these as recording rules: the PromQL of every panel is checked.
    records = [{"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m")}
               for i, e in enumerate(exprs)]
    pathlib.Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))


def kustomization_objects(directory, seen=None):
    """(kind, name) of the objects a kustomization's resources declare, bases included."""
    seen = seen or set()
    directory = directory.resolve()
    if directory in seen:
        return set()
    seen.add(directory)
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = set()
    for res in k.get("resources", []):
        target = directory / res
        if target.is_dir():
            objects |= kustomization_objects(target, seen)
        elif target.is_file():
            for doc in yaml.safe_load_all(target.read_text()):
                if doc:
                    objects.add((doc["kind"], doc["metadata"]["name"]))
    for gen in k.get("configMapGenerator", []):
        objects.add(("ConfigMap", gen["name"]))
    return objects


def check_kustomizations(root):
    for kfile in sorted((root / "deploy/k8s").rglob("kustomization.yaml")):
        directory = kfile.parent
        rel = directory.relative_to(root)
        k = yaml.safe_load(kfile.read_text())
        missing = []
        for res in k.get("resources", []):
            target = directory / res
            if not (target.is_file() or (target / "kustomization.yaml").is_file()):
                missing.append(res)
        for gen in k.get("configMapGenerator", []):
            for entry in gen.get("files", []) + gen.get("envs", []):
                if not (directory / entry.split("=")[-1]).is_file():
                    missing.append(entry)
        patch_files = [p["path"] for p in k.get("patches", []) if "path" in p]
        missing += [p for p in patch_files if not (directory / p).is_file()]
        check(not missing, f"{rel}: every resource, generator file and patch exists", ", ".join(missing))
        objects = kustomization_objects(directory)
        untargeted = []
        for p in patch_files:
            if (directory / p).is_file():
                for doc in yaml.safe_load_all((directory / p).read_text()):
                    if doc and (doc["kind"], doc["metadata"]["name"]) not in objects:
                        untargeted.append(f"{p}: {doc['kind']}/{doc['metadata']['name']}")
        for gen in k.get("configMapGenerator", []):
            if gen.get("behavior") == "merge":
                base_objects = set()
                for res in k.get("resources", []):
                    if (directory / res).is_dir():
                        base_objects |= kustomization_objects(directory / res)
                if ("ConfigMap", gen["name"]) not in base_objects:
                    untargeted.append(f"configMapGenerator merge: {gen['name']}")
        check(not untargeted, f"{rel}: every patch targets an object it has", "; ".join(untargeted))


def check_no_inline_secrets(root, rendered_files):
    in_env_files = []
    for path in list((root / "deploy").rglob("*.env")) + list((root / "deploy").rglob("*.env.example")):
        for line in path.read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if "=" in line and not line.lstrip().startswith("#") and SECRET_VARS.match(key):
                in_env_files.append(f"{path.relative_to(root)}: {key}")
    check(not in_env_files, "no secret setting in the env files of deploy/", ", ".join(in_env_files))
    for path in rendered_files:
        docs = [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d]
        inlined = []
        for doc in docs:
            if doc["kind"] == "Secret":
                inlined.append(f"Secret/{doc['metadata']['name']}")
            if doc["kind"] == "ConfigMap":
                inlined += [f"ConfigMap/{doc['metadata']['name']}: {k}" for k in doc.get("data", {}) if SECRET_VARS.match(k)]
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                for env in c.get("env", []):
                    if SECRET_VARS.match(env["name"]) and "secretKeyRef" not in env.get("valueFrom", {}):
                        inlined.append(f"{doc['metadata']['name']}: {env['name']}")
        check(not inlined, f"{pathlib.Path(path).name}: no Secret inlined, secret settings by secretKeyRef",
              ", ".join(inlined))


def check_dockerfile(root):
    text = (root / "deploy/Dockerfile").read_text()
    check("cargo build --release --locked" in text and "dev-tools" not in text.split("RUN", 1)[1].split("\n\n")[0],
          "Dockerfile builds `cargo build --release --locked` without dev-tools")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    check(bool(users) and not users[-1].startswith(("root", "0")), "Dockerfile runs as a non-root USER")
    sources = []
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        sources += line.split()[:-1]
    missing = [s for s in sources if not (root / s).exists()]
    check(not missing, "every COPY source of the Dockerfile exists", ", ".join(missing))
    ignore = (root / ".dockerignore").read_text().splitlines()
    allowed = {l[1:].rstrip("/") for l in ignore if l.startswith("!")}
    excluded = [s for s in sources if s not in allowed]
    check(not excluded, ".dockerignore lets every COPY source in", ", ".join(excluded))


def main():
    root = pathlib.Path(sys.argv[1]).resolve()
    rules_out = sys.argv[2]
    rendered = sys.argv[3:]
    emitted, histograms = emitted_metrics(root), histogram_names(root)
    check(len(emitted) > 10, f"found {len(emitted)} metric names emitted in src/")
    check_env_names(root)
    check_rules_and_runbooks(root, emitted, histograms)
    check_dashboard(root, emitted, histograms, rules_out)
    check_kustomizations(root)
    check_no_inline_secrets(root, rendered)
    check_dockerfile(root)
    if failures:
        print(f"{len(failures)} deploy check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
