"""Tests for lanyard's GitLab integration: the catalog component (templates/lanyard.yml), the
classic include (.gitlab/lanyard.gitlab-ci.yml) and this project's .gitlab-ci.yml.

  gitlab_ci.py check                 structure checks (no binary needed)
  gitlab_ci.py jobs --tmp DIR        run jobs the way GitLab Runner does, against the real binary
                                     ($LANYARD_BIN), the issuer ($ISSUER_READY) and the JWT-checking
                                     upstream ($UPSTREAM_READY) that run.sh started

Emulation of GitLab, kept to what the component relies on:
  - component inputs: spec:inputs validated (unknown, missing, regex), then $[[ inputs.X ]]
    interpolated in every string of the parsed body, keys included; defaults are taken as
    written (GitLab does not interpolate $[[ ]] inside spec:inputs:*:default);
  - $[[ component.X ]] (GitLab 18.6+) only for X listed in spec:component, in the body only:
    component.version is the version in `@<version>` of a semantic-version include, and null
    for a branch or SHA include (a whole-string value then becomes null, which a job variable
    reads as empty; inside a longer string it is the empty string);
  - include (component, project/file), deep merge, `extends` (hashes merged, the rest replaced),
    `!reference` and nested script arrays flattened;
  - variables: predefined < global < job < project CI/CD variables, values expanded against
    each other as the runner does; id_tokens minted by the issuer with the aud the YAML gives;
  - the runner's bash script: `trap exit 1 TERM`, errexit + pipefail, the variables exported,
    `cd $CI_PROJECT_DIR`, every command echoed then run, all inside `: | eval $'...'`;
    before_script + script concatenated in one shell, after_script in a new shell that shares
    only the CI variables (plus CI_JOB_STATUS), in a new session so the step can be killed.
"""
import argparse
import copy
import functools
import http.server
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import threading

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jobsim  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COMPONENT = os.path.join(ROOT, "templates", "lanyard.yml")
CLASSIC = os.path.join(ROOT, ".gitlab", "lanyard.gitlab-ci.yml")
PROJECT_CI = os.path.join(ROOT, ".gitlab-ci.yml")
AUDIENCE = "https://gateway.example.com"
AUDIT_FILE = "lanyard-audit.jsonl"
GITLAB_SUB = "project_path:acme/app:ref_type:branch:ref:main"
FQDN = "gitlab.example.com"

INPUT_RE = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")
COMPONENT_RE = re.compile(r"\$\[\[\s*component\.([a-z_]+)\s*\]\]")
COMPONENT_FIELDS = ("name", "sha", "version", "reference")
SEMVER_RE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?")
ANY_INTERP_RE = re.compile(r"\$\[\[(.*?)\]\]")
VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# ---------------------------------------------------------------- YAML with GitLab's tags
class Reference(list):
    pass


class Loader(yaml.SafeLoader):
    pass


Loader.add_constructor("!reference", lambda loader, node: Reference(loader.construct_sequence(node)))


def load_yaml(text):
    return yaml.load(text, Loader=Loader)


class CiError(Exception):
    pass


# ---------------------------------------------------------------- component inputs
def split_component(text):
    """The header (spec) and body documents; GitLab requires the `---` between them."""
    docs = list(yaml.load_all(text, Loader=Loader))
    if len(docs) != 2:
        raise CiError(f"expected 2 YAML documents (spec header, ---, body), found {len(docs)}")
    return docs[0], docs[1]


def resolve_inputs(header, given):
    declared = ((header or {}).get("spec") or {}).get("inputs") or {}
    for k in given:
        if k not in declared:
            raise CiError(f"unknown input {k!r}")
    values = {}
    for name, d in declared.items():
        d = d or {}
        if name in given:
            v = given[name]
        elif "default" in d:
            v = d["default"]
        else:
            raise CiError(f"input {name!r} is required and was not given")
        if "regex" in d and not re.search(d["regex"], str(v)):
            raise CiError(f"input {name!r}: {v!r} does not match {d['regex']}")
        if "options" in d and v not in d["options"]:
            raise CiError(f"input {name!r}: {v!r} is not one of {d['options']}")
        values[name] = v
    return values


def interpolate(node, values, component=None):
    """$[[ inputs.X ]] and $[[ component.X ]] in every string, keys included. `component` maps
    the fields the header's spec:component declares to their values (None: null)."""
    component = component or {}

    def value_of(m):
        inp, comp = INPUT_RE.fullmatch(m.group(0)), COMPONENT_RE.fullmatch(m.group(0))
        if inp:
            if inp.group(1) not in values:
                raise CiError(f"{m.group(0)!r} names an undeclared input")
            return values[inp.group(1)]
        if comp:
            if comp.group(1) not in component:
                raise CiError(f"{m.group(0)!r}: component.{comp.group(1)} is not listed in spec:component")
            return component[comp.group(1)]
        raise CiError(f"unsupported interpolation {m.group(0)!r}")

    if isinstance(node, str):
        found = list(ANY_INTERP_RE.finditer(node))
        for m in found:
            value_of(m)
        if len(found) == 1 and found[0].group(0) == node:
            return value_of(found[0])
        return ANY_INTERP_RE.sub(lambda m: "" if value_of(m) is None else str(value_of(m)), node)
    if isinstance(node, Reference):
        return Reference(interpolate(x, values, component) for x in node)
    if isinstance(node, list):
        return [interpolate(x, values, component) for x in node]
    if isinstance(node, dict):
        return {interpolate(k, values, component): interpolate(v, values, component) for k, v in node.items()}
    return node


def component_context(header, version_ref):
    """What GitLab gives $[[ component.X ]]: only the fields spec:component lists."""
    declared = ((header or {}).get("spec") or {}).get("component") or []
    unknown = [f for f in declared if f not in COMPONENT_FIELDS]
    if unknown:
        raise CiError(f"spec:component lists unknown fields {unknown}")
    semver = SEMVER_RE.fullmatch(version_ref or "")
    known = {"name": "lanyard", "sha": None, "reference": version_ref,
             "version": version_ref if semver else None}
    return {f: known[f] for f in declared}


def load_component(path, given, version_ref=None, rewrite=None):
    with open(path) as f:
        text = f.read()
    if rewrite:
        text = rewrite(text)
    header, body = split_component(text)
    return interpolate(body, resolve_inputs(header, given), component_context(header, version_ref))


# ---------------------------------------------------------------- pipeline resolution
def deep_merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def expand(value, variables):
    """The runner's variable expansion: $VAR and ${VAR}, unknown ones empty, $$ a literal $."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return str(variables.get(m.group(1) or m.group(2), ""))
    return VAR_RE.sub(sub, value)


def resolve_includes(pipeline, ctx, rewrite=None):
    merged = {}
    for inc in pipeline.get("include") or []:
        if "component" in inc:
            ref = expand(inc["component"], ctx)
            m = re.fullmatch(r"([^/]+)/(.+)/([^/@]+)@(.+)", ref)
            if not m or m.group(1) != ctx["CI_SERVER_FQDN"]:
                raise CiError(f"component reference {ref!r} is not <fqdn>/<project>/<name>@<version>")
            name = m.group(3)
            candidates = [os.path.join(ROOT, "templates", name + ".yml"),
                          os.path.join(ROOT, "templates", name, "template.yml")]
            path = next((p for p in candidates if os.path.exists(p)), None)
            if not path:
                raise CiError(f"no component {name!r} under templates/")
            doc = load_component(path, inc.get("inputs") or {}, m.group(4), rewrite)
        elif "project" in inc or "local" in inc:
            with open(os.path.join(ROOT, (inc.get("file") or inc.get("local")).lstrip("/"))) as f:
                text = f.read()
            doc = load_yaml(rewrite(text) if rewrite else text)
        else:
            raise CiError(f"unsupported include {inc}")
        deep_merge(merged, doc)
    deep_merge(merged, {k: v for k, v in pipeline.items() if k != "include"})
    return merged


def resolve_job(config, name, seen=()):
    if name in seen:
        raise CiError(f"extends loop at {name}")
    job = config.get(name)
    if not isinstance(job, dict):
        raise CiError(f"no job {name!r}")
    parents = job.get("extends") or []
    parents = [parents] if isinstance(parents, str) else parents
    out = {}
    for p in parents:
        deep_merge(out, resolve_job(config, p, seen + (name,)))
    return deep_merge(out, {k: v for k, v in job.items() if k != "extends"})


def resolve_references(node, config):
    if isinstance(node, Reference):
        target = config
        for key in node:
            target = target[key]
        return resolve_references(copy.deepcopy(target), config)
    if isinstance(node, list):
        return [resolve_references(x, config) for x in node]
    if isinstance(node, dict):
        return {k: resolve_references(v, config) for k, v in node.items()}
    return node


def flatten(script):
    if script is None:
        return []
    if isinstance(script, str):
        return [script]
    out = []
    for x in script:
        out.extend(flatten(x))
    return out


def plain_vars(block):
    return {k: str(v["value"] if isinstance(v, dict) else ("" if v is None else v))
            for k, v in (block or {}).items()}


# ---------------------------------------------------------------- the runner's scripts
def runner_script(exports, commands, cwd):
    body = [f"export {k}={jobsim.shell_escape(v)}" for k, v in exports.items()]
    body.append(f"cd {jobsim.shell_escape(cwd)}")
    for cmd in commands:
        cmd = cmd.strip()
        first, _, rest = cmd.partition("\n")
        label = f"$ {first}" + (" # collapsed multi-line command" if rest else "")
        body.append("echo " + jobsim.shell_escape("\x1b[32;1m" + label + "\x1b[0;m"))
        body.append(cmd)
    inner = "\n".join(body) + "\n"
    return ("#!/usr/bin/env bash\n\ntrap exit 1 TERM\n\n"
            "if set -o | grep pipefail > /dev/null; then set -o pipefail; fi; set -o errexit\n"
            "set +o noclobber\n"
            ": | eval " + jobsim.shell_escape(inner) + "\n"
            "exit 0\n")


# ---------------------------------------------------------------- structure checks
def scripts_of(job):
    return flatten(job.get("before_script")), flatten(job.get("after_script"))


def check(res):
    # Layout: GitLab finds a component at templates/<name>.yml or templates/<name>/template.yml.
    res.check("component is at a catalog path (templates/lanyard.yml)", os.path.exists(COMPONENT))
    with open(COMPONENT) as f:
        text = f.read()
    res.check("component: spec header and body are separated by a `---` line",
              re.search(r"^---\s*$", text, re.M) is not None)
    try:
        header, body = split_component(text)
    except (CiError, yaml.YAMLError) as e:
        res.check("component: parses as two YAML documents", False, str(e))
        return
    res.check("component: the header holds only spec:component and spec:inputs",
              isinstance(header, dict) and list(header) == ["spec"]
              and sorted(header["spec"]) == ["component", "inputs"], f"header keys: {header and list(header)}")
    res.check("component: spec:component is [version] (GitLab 18.6+)", header["spec"].get("component") == ["version"],
              f"got {header['spec'].get('component')!r}")
    declared = header["spec"]["inputs"]
    head_text, body_text = text.split("\n---", 1)
    used = set(INPUT_RE.findall(body_text))
    bad_interp = [m for m in ANY_INTERP_RE.findall(text)
                  if not re.fullmatch(r"\s*(inputs\.[A-Za-z0-9_-]+|component\.version)\s*", m)]
    res.check("component: every $[[ ]] is an input reference or component.version", not bad_interp, f"{bad_interp}")
    in_defaults = [k for k, d in declared.items() if "$[[" in str((d or {}).get("default", ""))]
    res.check("component: no input default holds $[[ ]] (GitLab does not interpolate defaults)", not in_defaults,
              f"{in_defaults}")
    res.check("component: the header uses no $[[ ]] at all", "$[[" not in head_text)
    raw_vars = (body.get("$[[ inputs.job-name ]]") or {}).get("variables") or {}
    comp_uses = [m.group(0) for m in COMPONENT_RE.finditer(body_text)]
    res.check("component: $[[ component.version ]] is used once, as LANYARD_DEFAULT_VERSION in variables:",
              comp_uses == ["$[[ component.version ]]"]
              and raw_vars.get("LANYARD_DEFAULT_VERSION") == "$[[ component.version ]]", f"{comp_uses}")
    for ref, want in (("1.2.3", "1.2.3"), ("0" * 40, ""), ("main", "")):
        try:
            got = interpolate(body, resolve_inputs(header, {"audience": AUDIENCE}),
                              component_context(header, ref))
            got = plain_vars((got.get(".lanyard") or {}).get("variables")).get("LANYARD_DEFAULT_VERSION")
            res.check(f"component: included @{ref[:12]}, LANYARD_DEFAULT_VERSION is {want!r}", got == want,
                      f"got {got!r}")
        except CiError as e:
            res.check(f"component: included @{ref[:12]} resolves", False, str(e))
    res.check("component: every input used in the body is declared", used <= set(declared),
              f"undeclared: {sorted(used - set(declared))}")
    res.check("component: every declared input is used", set(declared) <= used,
              f"unused: {sorted(set(declared) - used)}")
    res.check("component: `audience` is required (no default)",
              "audience" in declared and "default" not in (declared["audience"] or {}))
    want_defaults = {"config": "lanyard.toml", "version": "", "job-name": ".lanyard"}
    for k, v in want_defaults.items():
        res.check(f"component: input {k} defaults to {v!r}", (declared.get(k) or {}).get("default") == v,
                  f"got {(declared.get(k) or {}).get('default')!r}")
    for k, d in declared.items():
        d = d or {}
        if "regex" in d and "default" in d:
            res.check(f"component: default of {k} matches its regex", re.search(d["regex"], str(d["default"])))
        res.check(f"component: input {k} has a description", bool(d.get("description")))
    # Inputs are validated the way GitLab does.
    for given, why in (({}, "missing audience"), ({"audience": "a", "version": "1.2"}, "bad version"),
                       ({"audience": "a", "job-name": "lanyard"}, "job name not hidden"),
                       ({"audience": "a", "nope": "x"}, "unknown input")):
        try:
            resolve_inputs(header, given)
            res.check(f"component: inputs refused ({why})", False, "accepted")
        except CiError:
            res.check(f"component: inputs refused ({why})", True)
    job_body = interpolate(body, resolve_inputs(header, {"audience": AUDIENCE}), component_context(header, "1.0.0"))
    res.check("component: the body is exactly one hidden job, .lanyard (no top-level keywords)",
              list(job_body) == [".lanyard"], f"top-level keys: {list(job_body)}")
    job = job_body.get(".lanyard") or {}
    raw_job = body.get("$[[ inputs.job-name ]]") or {}
    res.check("component: id_tokens LANYARD_ID_TOKEN with aud: $[[ inputs.audience ]]",
              (raw_job.get("id_tokens") or {}).get("LANYARD_ID_TOKEN", {}).get("aud") == "$[[ inputs.audience ]]")
    before, after = scripts_of(job)
    res.check("component: .lanyard has before_script and after_script", bool(before) and bool(after))
    starts = [c for c in before if "lanyard start" in c]
    res.check("component: before_script starts lanyard with --config and --export sh and evals it",
              len(starts) == 1 and "--export sh" in starts[0] and '--config "$LANYARD_CONFIG"' in starts[0]
              and 'eval "$lanyard_exports"' in starts[0])
    res.check("component: before_script installs only when lanyard is absent, with install.sh "
              "--version/--base-url/--dir",
              any("command -v lanyard" in c and "install.sh" in c and "--version" in c and "--base-url" in c
                  and "--dir" in c for c in before))
    res.check("component: after_script runs `lanyard stop`", any("lanyard stop" in c for c in after))
    joined = "\n".join(before)
    res.check("component: install.sh comes from the release folder of the version, nothing from a branch",
              "https://github.com/lanyard-ci/lanyard/releases/download/v$lanyard_version" in joined
              and "raw.githubusercontent.com" not in text and "/main/" not in joined)
    res.check("component: install.sh is checked against the release's SHA256SUMS before it runs",
              joined.index("SHA256SUMS") < joined.index('sh "$LANYARD_INSTALL_DIR/install.sh"')
              and "not running it" in joined)
    arts = job.get("artifacts") or {}
    res.check("component: .lanyard declares the audit file as an artifact, when: always",
              arts.get("when") == "always" and arts.get("paths") == [AUDIT_FILE], f"artifacts: {arts}")
    res.check("component: the artifact is lanyard's default audit file name (session::AUDIT_FILE)",
              f'AUDIT_FILE: &str = "{AUDIT_FILE}"' in jobsim.file_text(os.path.join(ROOT, "agent", "src", "session.rs")))
    src = jobsim.file_text(os.path.join(ROOT, "agent", "src", "identity", "mod.rs"))
    res.check("component: the id_token variable is lanyard's GitLab default (DEFAULT_GITLAB_VARIABLE)",
              'DEFAULT_GITLAB_VARIABLE: &str = "LANYARD_ID_TOKEN"' in src)
    # Each script item is POSIX sh (images without bash run it with sh).
    for i, cmd in enumerate(before + after):
        r = subprocess.run(["sh", "-n"], input=cmd, text=True, capture_output=True)
        res.check(f"component: script item {i + 1} parses with sh -n", r.returncode == 0, r.stderr.strip())
    if shutil.which("shellcheck"):
        for i, cmd in enumerate(before + after):
            r = subprocess.run(["shellcheck", "-s", "sh", "-"], input=cmd, text=True, capture_output=True)
            res.check(f"component: script item {i + 1} is clean under shellcheck -s sh", r.returncode == 0,
                      r.stdout.strip())
    else:
        jobsim.Results.note("shellcheck not installed: script items checked with sh -n only")

    # The classic include: same hidden job, variables instead of inputs.
    with open(CLASSIC) as f:
        classic = load_yaml(f.read())
    res.check("classic include: only the hidden job .lanyard", list(classic) == [".lanyard"],
              f"top-level keys: {list(classic)}")
    cjob = classic.get(".lanyard") or {}
    cbefore, cafter = scripts_of(cjob)
    res.check("classic include and component: identical before_script", cbefore == before)
    res.check("classic include and component: identical after_script", cafter == after)
    res.check("classic include and component: identical artifacts", cjob.get("artifacts") == job.get("artifacts"),
              f"classic: {cjob.get('artifacts')}, component: {job.get('artifacts')}")
    res.check("classic include: id_tokens LANYARD_ID_TOKEN with aud: $LANYARD_AUDIENCE",
              (cjob.get("id_tokens") or {}).get("LANYARD_ID_TOKEN", {}).get("aud") == "$LANYARD_AUDIENCE")
    cvars, kvars = plain_vars(cjob.get("variables")), plain_vars(raw_job.get("variables"))
    res.check("classic include and component: the same variables", set(cvars) == set(kvars),
              f"only classic: {sorted(set(cvars) - set(kvars))}, only component: {sorted(set(kvars) - set(cvars))}")
    for var, tmpl in kvars.items():
        m = INPUT_RE.fullmatch(tmpl)
        if not m or m.group(1) == "audience":
            continue
        want = str((declared.get(m.group(1)) or {}).get("default", ""))
        res.check(f"classic include: {var} defaults like input {m.group(1)} ({want!r})", cvars.get(var) == want,
                  f"got {cvars.get(var)!r}")
    cargo = re.search(r'^version = "([^"]+)"$', jobsim.file_text(os.path.join(ROOT, "agent", "Cargo.toml")), re.M)
    res.check("classic include: LANYARD_DEFAULT_VERSION is agent/Cargo.toml's version (the release it ships in)",
              cargo is not None and cvars.get("LANYARD_DEFAULT_VERSION") == cargo.group(1),
              f"got {cvars.get('LANYARD_DEFAULT_VERSION')!r}, Cargo.toml {cargo and cargo.group(1)!r}")
    used_vars = set(re.findall(r"\$\{?(LANYARD_[A-Z0-9_]+)", "\n".join(before + after)))
    res.check("scripts use only variables the job declares (plus the id token)",
              used_vars <= set(kvars) | {"LANYARD_ID_TOKEN"}, f"{sorted(used_vars - set(kvars))}")

    # This project's own pipeline.
    try:
        with open(PROJECT_CI) as f:
            own = load_yaml(f.read())
    except (OSError, yaml.YAMLError) as e:
        res.check(".gitlab-ci.yml parses", False, str(e))
        return
    incs = [i.get("component") for i in own.get("include") or [] if isinstance(i, dict)]
    res.check(".gitlab-ci.yml includes this commit's component",
              "$CI_SERVER_FQDN/$CI_PROJECT_PATH/lanyard@$CI_COMMIT_SHA" in incs, f"{incs}")
    jobs = {k: v for k, v in own.items() if isinstance(v, dict) and not k.startswith(".")
            and k not in ("variables", "default", "workflow")}
    res.check(".gitlab-ci.yml runs scripts/test.sh in a rust image",
              any("scripts/test.sh" in "\n".join(flatten(j.get("script"))) and "rust" in str(j.get("image", ""))
                  for j in jobs.values()))
    res.check(".gitlab-ci.yml has a job that extends .lanyard",
              any(j.get("extends") in (".lanyard", [".lanyard"]) for j in jobs.values()))
    try:
        ctx = {"CI_SERVER_FQDN": FQDN, "CI_PROJECT_PATH": "acme/lanyard", "CI_COMMIT_SHA": "0" * 40}
        merged = resolve_includes(own, ctx)
        for name in jobs:
            resolve_references(resolve_job(merged, name), merged)
        res.check(".gitlab-ci.yml resolves (component inputs, extends, !reference)", True)
    except (CiError, KeyError) as e:
        res.check(".gitlab-ci.yml resolves (component inputs, extends, !reference)", False, str(e))


# ---------------------------------------------------------------- running jobs
class Env:
    def __init__(self, args):
        self.tmp = args.tmp
        self.bin = os.environ["LANYARD_BIN"]
        self.issuer = jobsim.Issuer(os.environ["ISSUER_READY"])
        up = json.loads(os.environ["UPSTREAM_READY"])
        self.upstream_url, self.upstream_port, self.upstream_ca = up["url"], up["port"], up["ca_file"]


def test_config(env, path):
    with open(path, "w") as f:
        f.write(f"""# lanyard config for the GitLab job tests: the job's own token, passed through to a
# local HTTPS upstream that checks it against the issuer's JWKS. No token service needed.
[identity]
source = "auto"

[[credential]]
name = "gateway"
exchange = "passthrough"

[[route]]
name = "gateway"
url = "{env.upstream_url}/api/"
credential = "gateway"

[upstream]
extra_ca = "{env.upstream_ca}"
""")


def run_gitlab_job(res, env, label, fixture, *, case="ok", project_vars=None, lanyard_on_path=True,
                   kill=False, rewrite=None):
    """Resolve and run job `deploy` of a fixture pipeline. Returns a dict of what happened."""
    d = os.path.join(env.tmp, label.replace(" ", "-").replace("/", "-"))
    builds = os.path.join(d, "builds")
    project = os.path.join(builds, "acme", "app")
    for sub in (project, os.path.join(d, "home"), os.path.join(d, "bin"), os.path.join(d, "facts"),
                os.path.join(d, "tmp")):
        os.makedirs(sub, exist_ok=True)
    if lanyard_on_path:
        os.symlink(env.bin, os.path.join(d, "bin", "lanyard"))
    test_config(env, os.path.join(project, "lanyard.toml"))
    ready, hold = os.path.join(d, "ready.fifo"), os.path.join(d, "hold.fifo")
    os.mkfifo(ready)
    os.mkfifo(hold)
    job_id = str(random.randint(10**8, 10**9 - 1))
    predefined = {
        "CI": "true", "GITLAB_CI": "true", "CI_SERVER": "yes", "CI_SERVER_URL": f"https://{FQDN}",
        "CI_SERVER_FQDN": FQDN, "CI_SERVER_HOST": FQDN, "CI_API_V4_URL": f"https://{FQDN}/api/v4",
        "CI_PROJECT_PATH": "acme/app", "CI_PROJECT_DIR": project, "CI_BUILDS_DIR": builds,
        "CI_JOB_ID": job_id, "CI_JOB_NAME": "deploy", "CI_JOB_STAGE": "test", "CI_JOB_TIMEOUT": "3600",
        "CI_PIPELINE_ID": "777", "CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
        "CI_COMMIT_REF_NAME": "main", "CI_JOB_URL": f"https://{FQDN}/acme/app/-/jobs/{job_id}",
    }
    project_vars = {"CASE": case, "TEST_DIR": HERE, "FACTS_DIR": os.path.join(d, "facts"),
                    "UPSTREAM_URL": env.upstream_url, "READY_FIFO": ready, "HOLD_FIFO": hold,
                    **(project_vars or {})}
    with open(os.path.join(HERE, "fixtures", fixture)) as f:
        pipeline = load_yaml(f.read())
    config = resolve_includes(pipeline, {**predefined, **project_vars}, rewrite)
    job = resolve_references(resolve_job(config, "deploy"), config)
    variables = dict(predefined)
    variables.update(plain_vars(config.get("variables")))
    variables.update(plain_vars(job.get("variables")))
    variables.update(project_vars)
    variables = {k: expand(v, variables) for k, v in variables.items()}
    tokens = []
    for name, spec in (job.get("id_tokens") or {}).items():
        aud = spec.get("aud")
        aud = [expand(a, variables) for a in aud] if isinstance(aud, list) else expand(str(aud), variables)
        tok = env.issuer.mint("gitlab", aud, claims={"job_id": job_id})
        tokens.append(tok)
        variables[name] = tok
    base_env = {"PATH": f"{d}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": os.path.join(d, "home"),
                "LANG": "C.UTF-8", "TMPDIR": os.path.join(d, "tmp")}
    step = os.path.join(d, "step_script.sh")
    with open(step, "w") as f:
        f.write(runner_script(variables, flatten(job.get("before_script")) + flatten(job.get("script")), project))
    step_log, after_log = os.path.join(d, "step.log"), os.path.join(d, "after.log")
    rc, killed, timed_out = jobsim.run_step(["bash", step], base_env, project, step_log,
                                            ready_fifo=ready if kill else None)
    status = "canceled" if kill else ("success" if rc == 0 else "failed")
    after = os.path.join(d, "after_script.sh")
    with open(after, "w") as f:
        f.write(runner_script({**variables, "CI_JOB_STATUS": status}, flatten(job.get("after_script")), project))
    arc, _, atimed = jobsim.run_step(["bash", after], base_env, project, after_log)
    out = {"dir": d, "builds": builds, "project": project, "job_id": job_id, "rc": rc, "killed": killed,
           "timed_out": timed_out or atimed, "after_rc": arc, "step_log": step_log, "after_log": after_log,
           "tokens": tokens, "facts": jobsim.read_facts(os.path.join(d, "facts", "facts")),
           "whoami": jobsim.read_json(os.path.join(d, "facts", "whoami.json"))}
    res.check(f"{label}: no step hit the test's time limit", not out["timed_out"])
    return out


def show_logs(job, lines=15):
    for name in ("step_log", "after_log"):
        text = jobsim.file_text(job[name]).rstrip().splitlines()
        for t in ("\x1b[32;1m", "\x1b[0;m"):
            text = [x.replace(t, "") for x in text]
        print(f"  --- {os.path.basename(job[name])} (last {lines} lines)")
        for line in text[-lines:]:
            print(f"  | {line}")


def assert_ran_with_lanyard(res, label, job):
    f, who = job["facts"], job["whoami"] or {}
    log = jobsim.file_text(job["step_log"])
    res.check(f"{label}: install step skipped, lanyard already on PATH ({job['dir']}/bin/lanyard)",
              "already on PATH; not installing" in log)
    res.check(f"{label}: state directory is $CI_BUILDS_DIR/.lanyard-$CI_JOB_ID",
              f.get("state") == os.path.join(job["builds"], f".lanyard-{job['job_id']}"), f"state={f.get('state')!r}")
    res.check(f"{label}: state directory has mode 0700", f.get("state_mode") == "700",
              f"mode={f.get('state_mode')!r}")
    res.check(f"{label}: CA bundle existed during the job", f.get("ca_exists") == "yes")
    res.check(f"{label}: SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS, "
              "GIT_SSL_CAINFO = LANYARD_CA_FILE", f.get("ca_vars_agree") == "yes" and bool(f.get("ca")))
    res.check(f"{label}: HTTPS_PROXY, HTTP_PROXY, https_proxy, http_proxy = LANYARD_PROXY "
              "(http://lanyard:<secret>@127.0.0.1:PORT)",
              f.get("proxy_vars_agree") == "yes" and f.get("proxy_shape") == "ok")
    res.check(f"{label}: NO_PROXY set, NODE_USE_ENV_PROXY=1, LANYARD_URL_GATEWAY set",
              f.get("no_proxy_set") == "yes" and f.get("node_use_env_proxy") == "1"
              and f.get("url_gateway_set") == "yes", f"{f}")
    res.check(f"{label}: curl through $HTTPS_PROXY reached the upstream with the job's GitLab token",
              who.get("ok") is True and who.get("sub") == GITLAB_SUB, f"upstream answered {who or 'nothing'}")
    res.check(f"{label}: the token's aud is the one the YAML declared ({AUDIENCE})",
              who.get("aud") == AUDIENCE, f"aud={who.get('aud')!r}")


def assert_stopped(res, label, job, expect_summary=True):
    alog = jobsim.file_text(job["after_log"])
    res.check(f"{label}: after_script succeeded", job["after_rc"] == 0, f"status {job['after_rc']}")
    if expect_summary:
        res.check(f"{label}: `lanyard stop` printed the audit summary (names route gateway)",
                  "gateway" in alog or f"127.0.0.1:{upstream_port()}" in alog)
    jobsim.check_clean(res, label, facts=job["facts"], log_paths=[job["step_log"], job["after_log"]],
                       secrets=job["tokens"],
                       extra_absent=[os.path.join(job["builds"], f".lanyard-{job['job_id']}")])
    audit = os.path.join(job["project"], AUDIT_FILE)
    lines = jobsim.file_text(audit).splitlines()
    res.check(f"{label}: the audit file the artifact declares survives `lanyard stop` in the project directory, "
              "job header first", bool(lines) and '"job"' in lines[0], f"{audit}: {lines[:1]}")
    res.check(f"{label}: `lanyard stop` named the kept audit file", f"audit record kept in {audit}" in alog,
              alog[-400:])
    stray = [e for e in os.listdir(job["builds"]) if e != "acme"]
    res.check(f"{label}: the builds directory holds only the project afterwards", not stray, f"{stray}")


def upstream_port():
    return json.loads(os.environ["UPSTREAM_READY"])["port"]


def jobs(res, args):
    env = Env(args)
    jobsim.become_subreaper()
    for sub in ("start", "stop", "status", "run"):
        if not jobsim.lanyard_has(env.bin, sub):
            jobsim.Results.note(f"note: {env.bin} has no `{sub}` subcommand yet; the checks that need it fail")

    # The test config and a GitLab token, checked with doctor (exists today).
    d = os.path.join(env.tmp, "doctor")
    os.makedirs(d)
    cfg = os.path.join(d, "lanyard.toml")
    test_config(env, cfg)
    tok = env.issuer.mint("gitlab", AUDIENCE)
    rc, out, err = jobsim.run_capture([env.bin, "doctor", "--config", cfg],
                                      env={"PATH": "/usr/bin:/bin", "GITLAB_CI": "true", "LANYARD_ID_TOKEN": tok})
    res.check("doctor with the job's token: platform gitlab (because GITLAB_CI=true), exit 0",
              rc == 0 and "platform: gitlab (because GITLAB_CI=true)" in out,
              f"exit {rc}: {(out + err).strip()[-600:]}")
    res.check("doctor with the job's token: no token in its output", tok not in out + err)

    # 1. The component, a job whose script succeeds; the user keeps before_script via !reference.
    label = "component/success"
    job = run_gitlab_job(res, env, label, "component-job.yml", case="ok")
    ok = res.check(f"{label}: job succeeded", job["rc"] == 0, f"status {job['rc']}")
    res.check(f"{label}: the user's before_script ran after lanyard's (!reference)",
              "the user's own before_script runs after lanyard started" in jobsim.file_text(job["step_log"])
              .split("lanyard: started")[-1])
    assert_ran_with_lanyard(res, label, job)
    assert_stopped(res, label, job)
    if not ok:
        show_logs(job)

    # 2. The script fails: after_script still stops lanyard.
    label = "component/script-fails"
    job = run_gitlab_job(res, env, label, "component-job.yml", case="fail")
    started = res.check(f"{label}: lanyard started and the script then failed with status 1",
                        job["rc"] == 1 and "the job's script fails here" in jobsim.file_text(job["step_log"]),
                        f"status {job['rc']}")
    assert_stopped(res, label, job)
    if not started:
        show_logs(job)

    # 3. The job's shell is SIGKILLed half-way (its whole process group, as on cancel/timeout).
    label = "component/killed"
    job = run_gitlab_job(res, env, label, "component-job.yml", case="kill", kill=True)
    ok = res.check(f"{label}: the script reached the middle (lanyard up, upstream called) and was SIGKILLed",
                   job["killed"] and (job["whoami"] or {}).get("ok") is True, f"status {job['rc']}")
    assert_stopped(res, label, job)
    if not ok:
        show_logs(job)

    # 4. The classic include behaves the same.
    label = "classic/success"
    job = run_gitlab_job(res, env, label, "classic-job.yml", case="ok")
    ok = res.check(f"{label}: job succeeded", job["rc"] == 0, f"status {job['rc']}")
    assert_ran_with_lanyard(res, label, job)
    assert_stopped(res, label, job)
    if not ok:
        show_logs(job)

    # 5. The classic include without LANYARD_AUDIENCE stops before starting anything.
    label = "classic/no-audience"
    job = run_gitlab_job(res, env, label, "classic-noaud.yml", case="ok")
    log = jobsim.file_text(job["step_log"])
    res.check(f"{label}: job fails before lanyard starts, naming LANYARD_AUDIENCE",
              job["rc"] != 0 and "LANYARD_AUDIENCE is empty" in log and "not reached" not in log)
    res.check(f"{label}: no state directory was created",
              not os.path.exists(os.path.join(job["builds"], f".lanyard-{job['job_id']}")))
    res.check(f"{label}: after_script succeeded", job["after_rc"] == 0)
    left = jobsim.live_descendants()
    res.check(f"{label}: nothing left running", not left, "; ".join(map(jobsim.describe, left)))
    jobsim.kill_leftovers(left)

    # 6. The install branch, with the repository's install.sh and a release served on 127.0.0.1.
    install_cases(res, env)


class ReleaseServer:
    """Serves DIR on 127.0.0.1:<ephemeral> from a thread of this process (stopped by close());
    `hits` lists the paths asked for."""

    def __init__(self, root):
        hits = self.hits = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, fmt, *args):
                pass

            def log_request(self, code="-", size="-"):
                hits.append(f"{self.path} {code}")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


GITHUB_RELEASES = "https://github.com/lanyard-ci/lanyard/releases"
PACKAGE = os.path.join(ROOT, ".github", "workflows", "package-release.sh")
TAMPER_LINE = 'echo "a tampered install.sh ran"\n'


def make_releases(env, version):
    """<tmp>/release/<variant>/releases/download/v<version>/, each made by the release's own
    package-release.sh (archive of $LANYARD_BIN, install.sh, SHA256SUMS):
      good        as the release workflow publishes it
      badscript   install.sh changed after SHA256SUMS was written
      badarchive  SHA256SUMS gives the archive another digest (install.sh's line intact)"""
    target = {"x86_64": "x86_64-unknown-linux-musl", "aarch64": "aarch64-unknown-linux-musl"}[platform.machine()]
    root = os.path.join(env.tmp, "release")
    good = os.path.join(root, "good", "releases", "download", "v" + version)
    for args in (["archive", target, os.path.realpath(env.bin), good], ["sums", good, target]):
        rc, out, err = jobsim.run_capture(["sh", PACKAGE, *args], env={**os.environ, "SOURCE_DATE_EPOCH": "1"})
        if rc != 0:
            raise CiError(f"package-release.sh {args[0]} failed: {err.strip()}")
    for variant in ("badscript", "badarchive"):
        shutil.copytree(good, os.path.join(root, variant, "releases", "download", "v" + version))
    bad = os.path.join(root, "badscript", "releases", "download", "v" + version, "install.sh")
    with open(bad) as f:
        lines = f.readlines()
    with open(bad, "w") as f:
        f.write(lines[0] + TAMPER_LINE + "".join(lines[1:]))
    sums = os.path.join(root, "badarchive", "releases", "download", "v" + version, "SHA256SUMS")
    with open(sums) as f:
        text = f.read()
    with open(sums, "w") as f:
        f.write(re.sub(r"^[0-9a-f]{64}(  lanyard-)", "0" * 64 + r"\1", text, flags=re.M))
    return root, target


def install_cases(res, env):
    rc, out, _ = jobsim.run_capture([env.bin, "--version"])
    version = out.split()[1] if rc == 0 and out.startswith("lanyard ") else None
    if not res.check("the binary under test says its version", version is not None, out):
        return
    root, target = make_releases(env, version)
    server = ReleaseServer(root)
    folder = f"/releases/download/v{version}"
    try:
        for label, variant, ref in (
                ("component/install", "good", version),
                ("component/install-tampered-script", "badscript", version),
                ("component/install-tampered-archive", "badarchive", version),
                ("component/install-at-sha", "good", "0123456789abcdef0123456789abcdef01234567")):
            rewritten = []

            def rewrite(text, variant=variant, rewritten=rewritten):
                rewritten.append(text.count(GITHUB_RELEASES))
                return text.replace(GITHUB_RELEASES, f"{server.url}/{variant}/releases")

            server.hits.clear()
            job = run_gitlab_job(res, env, label, "install-job.yml", lanyard_on_path=False, rewrite=rewrite,
                                 project_vars={"COMPONENT_REF": ref})
            res.check(f"{label}: the test rewrote only the releases URL's host (found in the component)",
                      rewritten and all(n > 0 for n in rewritten), f"{rewritten}")
            install_dir = os.path.join(job["builds"], f".lanyard-bin-{job['job_id']}")
            state = os.path.join(job["builds"], f".lanyard-{job['job_id']}")
            log = jobsim.file_text(job["step_log"])
            hits = sorted(server.hits)
            if variant == "good" and ref == version:
                res.check(f"{label}: component.version {version} picked release v{version} (no version input)",
                          f"lanyard: installing {version} into {install_dir} from {server.url}/good{folder}" in log)
                res.check(f"{label}: exactly release v{version}'s install.sh, SHA256SUMS and archive were fetched",
                          hits == sorted(f"/good{folder}/{n} 200" for n in ("install.sh", "SHA256SUMS",
                                                                             "SHA256SUMS", f"lanyard-{target}.tar.gz")),
                          f"{hits}")
                res.check(f"{label}: install.sh checked against SHA256SUMS, then the archive by install.sh",
                          "lanyard: install.sh matches SHA256SUMS" in log and "matches SHA256SUMS" in
                          log.split("lanyard: install.sh matches SHA256SUMS", 1)[1])
                res.check(f"{label}: installed into $CI_BUILDS_DIR/.lanyard-bin-$CI_JOB_ID (expanded) and used",
                          f"installed: {install_dir}/lanyard" in log and "lanyard: started" in log)
                ok = res.check(f"{label}: job succeeded", job["rc"] == 0, f"status {job['rc']}")
                assert_stopped(res, label, job, expect_summary=False)
                if not ok:
                    show_logs(job)
            elif variant == "badscript":
                res.check(f"{label}: the tampered install.sh was refused before it ran; the job failed before start",
                          job["rc"] != 0 and "does not match the release's SHA256SUMS" in log
                          and "not running it" in log and "a tampered install.sh ran" not in log
                          and "lanyard-install:" not in log and "lanyard: started" not in log, f"status {job['rc']}")
                res.check(f"{label}: no state directory was created", not os.path.exists(state))
            elif variant == "badarchive":
                res.check(f"{label}: install.sh refused the archive and the job failed before start",
                          job["rc"] != 0 and "lanyard: install.sh matches SHA256SUMS" in log
                          and "checksum mismatch" in log and "lanyard: started" not in log, f"status {job['rc']}")
                res.check(f"{label}: no state directory was created", not os.path.exists(state))
            else:
                res.check(f"{label}: included at a SHA (no component.version), the job fails saying to set version",
                          job["rc"] != 0 and "included at a branch or commit, not a release" in log
                          and "Set the version input" in log, f"status {job['rc']}")
                res.check(f"{label}: nothing was downloaded", hits == [], f"{hits}")
            res.check(f"{label}: after_script removed the install directory", not os.path.exists(install_dir))
            left = jobsim.live_descendants()
            if left:
                res.check(f"{label}: nothing left running", False, "; ".join(map(jobsim.describe, left)))
                jobsim.kill_leftovers(left)
    finally:
        server.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["check", "jobs"])
    ap.add_argument("--tmp")
    args = ap.parse_args()
    res = jobsim.Results()
    try:
        if args.what == "check":
            check(res)
        else:
            jobs(res, args)
    except Exception as e:  # noqa: BLE001 - report, do not hide
        import traceback
        traceback.print_exc()
        res.check(f"{args.what}: the harness itself ran to the end", False, f"{type(e).__name__}: {e}")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
