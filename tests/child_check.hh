// child_check — runs a test's body in a forked child, so it may change
// fds 0-2 and 3.., the environment or its mount namespace without
// touching the runner.  The body returns "" when it passed, else what
// went wrong; that text comes back through a pipe.
#pragma once

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <functional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

inline std::string in_child(const std::function<std::string()>& body)
{
    int p[2];
    BOOST_REQUIRE(pipe(p) == 0);
    const pid_t pid = fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        std::string out;
        try {
            out = body();
        } catch (const std::exception& e) {
            out = std::string("exception: ") + e.what();
        }
        const ssize_t n = write(p[1], out.data(), out.size());
        _exit(n == static_cast<ssize_t>(out.size()) ? 0 : 1);
    }
    close(p[1]);
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = read(p[0], buf, sizeof buf)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    BOOST_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return out;
}

// In the child: fd 2 becomes the write end of a pipe; the returned read
// end (non-blocking, -1 on failure) shows what was written to stderr.
inline int stderr_to_pipe()
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    dup2(p[1], 2);
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    return p[0];
}
