"""A first flow: a small map on the default (thread-pool) runner.

Run it with ``python3 examples/hello.py``; pass a runner name to try another:
``python3 examples/hello.py processes``.
"""

import sys

from taskyard import flow, task, unmapped


@task
def greet(name: str, greeting: str) -> str:
    return f"{greeting}, {name}!"


@task(retries=2, retry_delay_seconds=0.1)
def shout(text: str) -> str:
    return text.upper()


@flow(log_prints=True)
def hello(names: list[str], greeting: str = "Hello") -> list[str]:
    print(f"greeting {len(names)} people")  # log_prints: this becomes a log line of the flow run
    greetings = greet.map(names, unmapped(greeting))
    return shout.map(greetings).result()


if __name__ == "__main__":
    runner = sys.argv[1] if len(sys.argv) > 1 else None
    chosen = hello.with_options(task_runner=runner) if runner else hello
    for line in chosen(["Ada", "Grace", "Linus"]):
        print(line)
