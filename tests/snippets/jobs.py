"""Turns one CI example of examples/ into the shell scripts its platform would run, whole:
  jobs.py FILE PLATFORM OUTDIR RELEASES_URL API_URL
writes OUTDIR/plan (one line per script: "step N.sh SHELL..." or "always N.sh SHELL...") and
the scripts. The only change to the example's text is the host of two URLs:
https://github.com/lanyard-ci/lanyard/releases -> RELEASES_URL (a local release tree) and
https://api.example.com -> API_URL (a local upstream); each must occur. Exits 1 with a reason
when the example does not have the expected shape, or its image lacks what install.sh needs.
"""
import os
import re
import sys

import yaml

RELEASES = "https://github.com/lanyard-ci/lanyard/releases"
API = "https://api.example.com"
# Images whose contents are known to include curl (or wget), tar and sha256sum (coreutils):
# what install.sh and the install lines need. debian:*-slim has no curl.
IMAGES_WITH_INSTALL_TOOLS = {
    "atlassian/default-image:4": "Ubuntu with curl, wget, tar, coreutils (Bitbucket's default image)",
    "buildpack-deps:bookworm-curl": "Debian with curl, wget, ca-certificates, tar, coreutils",
    "cimg/base:current": "Ubuntu with curl, wget, tar, coreutils (CircleCI's base image)",
}


def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def need_image(image):
    if image not in IMAGES_WITH_INSTALL_TOOLS:
        die(f"image {image!r} is not known to have curl/wget, tar and sha256sum for install.sh "
            f"(known: {sorted(IMAGES_WITH_INSTALL_TOOLS)})")


def plan(path, platform):
    text = open(path).read()
    for url in (RELEASES, API):
        if url not in text:
            die(f"{path} does not use {url}")
    steps, always = [], []
    sh_e = ["bash", "-e"]
    if platform == "jenkins":
        if "pipeline {" not in text or "post {" not in text or "always {" not in text:
            die("no declarative pipeline with post/always")
        body, post = text.split("post {", 1)
        # `sh '''...'''` runs `sh -xe` on the agent (set -e; -x only echoes)
        steps = [(b, ["sh", "-e"]) for b in re.findall(r"sh '''(.*?)'''", body, re.S)]
        always = [(b, ["sh", "-e"]) for b in re.findall(r"sh '''(.*?)'''", post, re.S)]
    else:
        doc = yaml.safe_load(text)
        if platform == "bitbucket":
            need_image(doc.get("image"))
            step = doc["pipelines"]["default"][0]["step"]
            steps = [("\n".join(step["script"]), sh_e)]
            always = [("\n".join(step["after-script"]), sh_e)]
        elif platform == "circleci":
            job = doc["jobs"]["deploy"]
            need_image(job["docker"][0]["image"])
            for s in job["steps"]:
                if not isinstance(s, dict) or "run" not in s:
                    continue
                run = s["run"] if isinstance(s["run"], dict) else {"command": s["run"]}
                # CircleCI's default shell: /bin/bash -eo pipefail, which sources $BASH_ENV
                entry = (run["command"], ["bash", "-eo", "pipefail"])
                (always if run.get("when") == "always" else steps).append(entry)
        elif platform == "buildkite":
            steps = [(doc["steps"][0]["command"], sh_e)]
        elif platform == "kubernetes":
            c = doc["spec"]["containers"][0]
            need_image(c["image"])
            if c["command"] != ["/bin/bash", "-c"] or len(c["args"]) != 1:
                die(f"container command {c['command']} / args: expected /bin/bash -c SCRIPT")
            steps = [(c["args"][0], ["bash"])]
        else:
            die(f"unknown platform {platform}")
    if not steps:
        die("no job script found")
    return steps, always


def main():
    path, platform, out, releases_url, api_url = sys.argv[1:6]
    steps, always = plan(path, platform)
    with open(os.path.join(out, "plan"), "w") as p:
        n = 0
        for kind, items in (("step", steps), ("always", always)):
            for script, shell in items:
                n += 1
                script = script.replace(RELEASES, releases_url).replace(API, api_url)
                with open(os.path.join(out, f"{n}.sh"), "w") as f:
                    f.write(script + "\n")
                p.write(f"{kind} {n}.sh {' '.join(shell)}\n")


if __name__ == "__main__":
    main()
