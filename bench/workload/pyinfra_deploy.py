"""The benchmark's 12-task setup, pyinfra edition (same work as fleet.yaml)."""

from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.facts.server import Arch
from pyinfra.operations import apt, files, server

HERE = Path(__file__).parent
bench = host.data.bench_dir

files.directory(name="base folder", path=bench, mode="755")
files.directory(name="conf folder", path=f"{bench}/conf", mode="755")
files.directory(name="data folder", path=f"{bench}/data", mode="755")
APP_CONF = "[app]\nname = bench\nworkers = 4\n"
files.put(name="app config", src=StringIO(APP_CONF), dest=f"{bench}/conf/app.conf", mode="644")
files.put(name="motd", src=StringIO(f"Welcome to {host.name}\n"), dest=f"{bench}/conf/motd", mode="644")
files.put(name="payload file", src=str(HERE / "files/payload.txt"), dest=f"{bench}/data/payload.txt", mode="644")
files.template(
    name="node config from a template",
    src=str(HERE / "templates/node.conf.pyinfra.j2"),
    dest=f"{bench}/conf/node.conf",
    mode="644",
    arch=host.get_fact(Arch),
    app_port=host.data.app_port,
)
files.line(name="APP_HOME line", path=f"{bench}/conf/env.sh", line=f"^export APP_HOME={bench}$")
files.line(
    name="APP_MODE line", path=f"{bench}/conf/env.sh", line="^export APP_MODE=.*$", replace="export APP_MODE=prod"
)
# pyinfra has no `creates:`; its documented way is a fact checked while the deploy is planned.
if not host.get_fact(File, path=f"{bench}/data/stamp"):
    server.shell(name="one-time stamp", commands=[f"touch {bench}/data/stamp"])
if not host.get_fact(File, path=f"{bench}/data/build.txt"):
    server.shell(name="one-time build", commands=[f"echo built > {bench}/data/build.txt"])
apt.packages(name="base packages are installed", packages=["coreutils", "openssh-server"], update=False)
