"""Makes N orphans by double fork: each grandchild exits at once and is
reparented to the PID namespace's init, which must reap it. Run inside the
namespace (nsenter). Prints how many it made."""

import os
import sys


def storm(count: int) -> int:
    made = 0
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
        made += 1
    return made


if __name__ == "__main__":
    print(storm(int(sys.argv[1])))
