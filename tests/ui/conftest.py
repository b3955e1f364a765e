"""The UI tests' real Airflow 3 stack (with users and passwords) and a real headless Chromium.

One stack for the package (starting one costs ~30 s of the machine's 2 cores): SimpleAuthManager with an admin
and a viewer (passwords from a file), the emulator as ``eachlabs_default``, the moto S3 server as ``aws_moto``,
the repo's ``runway_review_and_publish`` DAG plus the test DAGs below.

The browser is Debian's ``chromium`` driven through Debian's ``/usr/bin/chromedriver`` by Selenium, with
Selenium Manager offline (``SE_OFFLINE``): nothing is ever downloaded. A missing browser fails the tests;
``.ci/run`` (``make test-ui``) installs it from Debian's packages first.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import s3
from tests.fixtures.stack import AirflowStack, StackError, stack_db_name

CHROMIUM = Path(os.environ.get("AIRFLOW_RUNWAY_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("AIRFLOW_RUNWAY_CHROMEDRIVER", "/usr/bin/chromedriver"))
#: Screenshots land here (gitignored); the path is printed at the end of the session.
SCREENSHOTS = Path(__file__).parent / "screenshots"

#: role -> (user, password). Multi-team mode: the viewer is in team_a, so it may not read team_b's DAGs.
USERS = {"admin": ("admin", "admin-password"), "viewer": ("viewer", "viewer-password")}
VIEWER_TEAM, OTHER_TEAM = "team_a", "team_b"
S3_CONN_ID = "aws_moto"
STORED_DAG = "ui_stored_videos"  # generate -> store in S3 (moto) with the aws_moto connection
OTHER_DAG = "ui_other_videos"  # generate only, in team_b's bundle: the page plays the provider's output
REVIEW_DAG = "runway_review_and_publish"

IMPORTS = """
from airflow.sdk import DAG
from airflow_runway.operators.runway import RunwayGenerateVideoOperator
from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator
"""

STORED_DAG_SOURCE = """
with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}, tags=["ui-test"]) as dag:
    generate = RunwayGenerateVideoOperator(
        task_id="generate",
        prompt_text="A red kite over green hills, {{{{ run_id }}}}",
        ratio="16:9",
        duration=5,
        seed=42,
        poll_interval=0.5,
        max_poll_interval=1,
    )
    EachlabsToObjectStorageOperator(
        task_id="store", source=generate.output, destination={bucket_url!r}, dest_conn_id={conn_id!r}
    )
"""

OTHER_DAG_SOURCE = """
with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}, tags=["ui-test"]) as dag:
    RunwayGenerateVideoOperator(
        task_id="generate",
        prompt_text="A paper boat on a rainy street",
        ratio="9:16",
        duration=10,
        # Waits in the worker: in multi-team mode a team's deferred tasks need a triggerer started for that team.
        deferrable=False,
        poll_interval=0.5,
        max_poll_interval=1,
    )
"""

RUN_TIMEOUT = 60.0


@pytest.fixture(scope="package")
def ui_bucket(moto_s3: s3.MotoS3Server) -> s3.S3Bucket:
    return s3.create_bucket(moto_s3, S3_CONN_ID)


@pytest.fixture(scope="package")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui_videos")


@pytest.fixture(scope="package")
def ui_stack(
    airflow_db: str,
    emulator_server: Any,
    emulator_config: Any,
    moto_s3: s3.MotoS3Server,
    ui_bucket: s3.S3Bucket,
    video_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowStack]:
    """The stack, logged in (REST calls) as the admin."""
    dags_folder = tmp_path_factory.mktemp("ui_dags")
    (dags_folder / "ui_stored_videos.py").write_text(
        IMPORTS + STORED_DAG_SOURCE.format(dag_id=STORED_DAG, bucket_url=ui_bucket.url("videos/"), conn_id=S3_CONN_ID)
    )
    team_folder = tmp_path_factory.mktemp("ui_team_b_dags")
    (team_folder / "ui_other_videos.py").write_text(IMPORTS + OTHER_DAG_SOURCE.format(dag_id=OTHER_DAG))
    local_bundle = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local_bundle, "kwargs": {"path": str(dags_folder)}},
        {
            "name": "team-b-dags",
            "classpath": local_bundle,
            "kwargs": {"path": str(team_folder)},
            "team_name": OTHER_TEAM,
        },
    ]
    shutil.copy(Path(__file__).parents[2] / "dags" / f"{REVIEW_DAG}.py", dags_folder / f"{REVIEW_DAG}.py")
    passwords = tmp_path_factory.mktemp("ui_auth") / "passwords.json"
    passwords.write_text(json.dumps(dict(USERS.values())))
    connection = {
        "conn_type": "eachlabs",
        "host": emulator_server.url,
        "password": emulator_config.api_key,
        "extra": {"rate_limit_per_minute": 6000},
    }
    env = {
        "AIRFLOW_CONN_EACHLABS_DEFAULT": json.dumps(connection),
        f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": moto_s3.connection_json(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        # SimpleAuthManager's roles are global (a viewer reads every DAG); its multi-team mode is what limits a
        # user to some DAGs: a DAG belongs to its bundle's team, a user reads team-less DAGs and its teams' DAGs.
        "AIRFLOW__CORE__MULTI_TEAM": "True",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,viewer:viewer:{VIEWER_TEAM}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "RUNWAY_VIDEO_ROOT": video_root.as_uri() + "/",
        "RUNWAY_POLL_INTERVAL": "0.5",
    }
    with AirflowStack(
        dags_folder=dags_folder,
        pg_server_url=airflow_db.rsplit("/", 1)[0],
        db_name=stack_db_name() + "_ui",
        extra_env=env,
        setup_commands=[["teams", "create", team] for team in (VIEWER_TEAM, OTHER_TEAM)],
    ) as stack:
        stack.login(*USERS["admin"])
        stack.request("POST", "/api/v2/pools", {"name": "eachlabs", "slots": 10, "include_deferred": True})
        yield stack


def trigger(stack: AirflowStack, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """Trigger a run once the DAG is parsed; return its run id."""
    stack.wait_for(lambda: stack.try_request("GET", f"/api/v2/dags/{dag_id}"), f"DAG {dag_id} parsed", 60)
    run = stack.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
    return str(run["dag_run_id"])


def wait_run(stack: AirflowStack, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
    """Wait until the run finishes; fail with the logs unless it succeeded."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"

    def done() -> str | None:
        state = stack.request("GET", path)["state"]
        return state if state in ("success", "failed") else None

    state = stack.wait_for(done, f"run {run_id} of {dag_id} to finish", timeout)
    if state != "success":
        raise StackError(f"run {run_id} of {dag_id} ended {state}\n{stack.log_tails()}")
    return state


def xcom(stack: AirflowStack, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    entry = stack.request("GET", f"{stack.ti_path(dag_id, run_id, task_id)}/xcomEntries/{key}?deserialize=true")
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value


# ---- the browser -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser_factory() -> Iterator[Callable[[], Any]]:
    """``browser_factory()`` -> a new headless Chromium session (its own cookies); all quit at the end."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            pytest.fail(
                f"{binary} is missing: the UI tests need Debian's browser "
                "(apt-get update && apt-get install -y chromium chromium-driver; `make test-ui` does it)"
            )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    def make() -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--no-sandbox",  # runs as root in CI containers
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1440,1000",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    SCREENSHOTS.mkdir(exist_ok=True)
    yield make
    for driver in drivers:
        driver.quit()
    print(f"\nUI screenshots in {SCREENSHOTS}")


def screenshot(driver: Any, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
