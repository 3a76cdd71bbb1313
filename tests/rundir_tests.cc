// rundir: the choice of the directory (in a child with a private /tmp and
// /run), and SharedFile: read without the lock, updated under it, replaced
// whole.
#include "log.hh"
#include "rundir.hh"

#include "child_check.hh"

#include <boost/test/unit_test.hpp>

#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

using namespace sockmapd;

namespace
{

struct TempDir {
    std::string path;
    TempDir()
    {
        char tmpl[] = "/tmp/sockmapd-rundir-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

std::string slurp(const std::string& path)
{
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

} // namespace

BOOST_AUTO_TEST_SUITE(rundir)

BOOST_AUTO_TEST_CASE(none_reads_and_writes_nothing)
{
    SharedFile none;
    BOOST_TEST(!none.usable());
    std::string text = "x";
    BOOST_TEST(none.read(text) == ENOENT);
    BOOST_TEST(text.empty());
    int err = 0;
    bool called = false;
    const auto done = none.update(
        std::chrono::milliseconds(10), SharedFile::WhenBusy::Skip,
        [&](std::string_view) -> std::optional<std::string> {
            called = true;
            return std::string("y");
        },
        err);
    BOOST_TEST((done == SharedFile::Update::Done));
    BOOST_TEST(!called);
}

BOOST_AUTO_TEST_CASE(update_sees_the_current_text_and_replaces_it)
{
    TempDir dir;
    SharedFile f(dir.path, "test", 1024);
    BOOST_TEST(f.path() == dir.path + "/test.state");
    std::string text;
    BOOST_TEST(f.read(text) == ENOENT); // not there yet
    int err = 0;
    std::string seen = "unset";
    const auto change = [&](std::string_view current) -> std::optional<std::string> {
        seen = std::string(current);
        return seen + "line\n";
    };
    BOOST_TEST((f.update(std::chrono::milliseconds(100), SharedFile::WhenBusy::Skip, change, err) ==
                SharedFile::Update::Done));
    BOOST_TEST(seen.empty());
    BOOST_TEST((f.update(std::chrono::milliseconds(100), SharedFile::WhenBusy::Skip, change, err) ==
                SharedFile::Update::Done));
    BOOST_TEST(seen == "line\n");
    BOOST_TEST(f.read(text) == 0);
    BOOST_TEST(text == "line\nline\n");
    // nullopt leaves the file as it is.
    BOOST_TEST((f.update(
                    std::chrono::milliseconds(100), SharedFile::WhenBusy::Skip,
                    [](std::string_view) -> std::optional<std::string> { return std::nullopt; },
                    err) == SharedFile::Update::Done));
    BOOST_TEST(slurp(f.path()) == "line\nline\n");
    // The lock is a file of its own beside the state.
    BOOST_TEST(::access((dir.path + "/test.lock").c_str(), F_OK) == 0);
}

BOOST_AUTO_TEST_CASE(a_file_over_the_limit_reads_as_empty)
{
    TempDir dir;
    SharedFile f(dir.path, "big", 8);
    std::ofstream(f.path()) << "far more than eight bytes\n";
    std::string text = "x";
    BOOST_TEST(f.read(text) == EFBIG);
    BOOST_TEST(text.empty());
    int err = 0;
    std::string seen = "unset";
    f.update(
        std::chrono::milliseconds(100), SharedFile::WhenBusy::Skip,
        [&](std::string_view current) -> std::optional<std::string> {
            seen = std::string(current);
            return std::string("ok\n");
        },
        err);
    BOOST_TEST(seen.empty());
    BOOST_TEST(slurp(f.path()) == "ok\n");
}

BOOST_AUTO_TEST_CASE(a_directory_that_is_gone_is_said)
{
    TempDir dir;
    SharedFile f(dir.path + "/gone", "x", 64);
    int err = 0;
    // Without a lock file the caller may still go on (WhenBusy::Proceed);
    // the write then fails and says why.
    const auto done = f.update(
        std::chrono::milliseconds(10), SharedFile::WhenBusy::Proceed,
        [](std::string_view) -> std::optional<std::string> { return std::string("x"); }, err);
    BOOST_TEST((done == SharedFile::Update::Unwritable));
    BOOST_TEST(err == ENOENT);
    // Skip: nothing is done without the lock.
    BOOST_TEST((f.update(
                    std::chrono::milliseconds(10), SharedFile::WhenBusy::Skip,
                    [](std::string_view) -> std::optional<std::string> { return std::string("x"); },
                    err) == SharedFile::Update::Busy));
}

// In a child with private, empty /tmp and /run (a mount namespace) and
// stderr a pipe: what runtime_dir() chose, and what it logged.  Needs
// root, as the log suite does.
std::string dir_choice(const std::function<std::string()>& body)
{
    return in_child([&] {
        if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777") != 0 || mount("tmpfs", "/run", "tmpfs", 0, nullptr) != 0)
            return std::string("private /tmp and /run: ") + std::strerror(errno);
        ::unsetenv("RUNTIME_DIRECTORY");
        return body();
    });
}

// stderr becomes a pipe; the returned fd reads what was logged.
int capture_log()
{
    const int fd = stderr_to_pipe();
    LogFacts f;
    f.stderr_private = true;
    log_init(f);
    log_setup(LogLevel::Info, "");
    return fd;
}

std::string drain(int fd)
{
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

BOOST_AUTO_TEST_CASE(runtime_dir_choice)
{
    BOOST_TEST(dir_choice([] {
                   ::setenv("RUNTIME_DIRECTORY", "/run/x:/run/y", 1);
                   if (runtime_dir() != "/run/x")
                       return "RUNTIME_DIRECTORY: " + runtime_dir();
                   ::unsetenv("RUNTIME_DIRECTORY");
                   ::mkdir("/run/sockmapd", 0750);
                   if (runtime_dir() != "/run/sockmapd")
                       return "/run/sockmapd: " + runtime_dir();
                   ::rmdir("/run/sockmapd");
                   const std::string mine = "/tmp/sockmapd-" + std::to_string(::geteuid());
                   if (runtime_dir() != mine)
                       return mine + ": " + runtime_dir();
                   return std::string();
               }) == "");
}

// A command root runs, and root in a directory the service user owns:
// files root created there would lock the handlers out of the state.
BOOST_AUTO_TEST_CASE(root_leaves_the_service_users_directory_alone)
{
    BOOST_TEST(dir_choice([] {
                   const int log = capture_log();
                   ::mkdir("/run/sockmapd", 0750);
                   if (::chown("/run/sockmapd", 12345, 12345) != 0)
                       return std::string("chown");
                   if (runtime_dir() != "/tmp/sockmapd-0")
                       return "root took " + runtime_dir();
                   if (!runtime_dir_for_command().empty())
                       return "a command as root uses " + runtime_dir_for_command();
                   ::setenv("RUNTIME_DIRECTORY", "/run/sockmapd", 1);
                   if (!runtime_dir().empty())
                       return std::string("root took RUNTIME_DIRECTORY of uid 12345");
                   const std::string said = drain(log);
                   if (said.find("RUNTIME_DIRECTORY /run/sockmapd belongs to another user") == std::string::npos)
                       return "no warning: " + said;
                   return std::string();
               }) == "");
}

// Another local user created /tmp/sockmapd-<uid> first: no shared state,
// and a warning says why.
BOOST_AUTO_TEST_CASE(squatted_tmp_directory_is_refused_with_a_warning)
{
    BOOST_TEST(dir_choice([] {
                   const int log = capture_log();
                   const uid_t victim = 12346;
                   const std::string dir = "/tmp/sockmapd-" + std::to_string(victim);
                   if (::mkdir(dir.c_str(), 0777) != 0 || ::chown(dir.c_str(), 12347, 12347) != 0 ||
                       ::chmod(dir.c_str(), 0777) != 0)
                       return std::string("squat: ") + std::strerror(errno);
                   if (setgid(victim) != 0 || setuid(victim) != 0)
                       return std::string("setuid: ") + std::strerror(errno);
                   if (!runtime_dir().empty())
                       return "took the squatted " + runtime_dir();
                   const std::string said = drain(log);
                   if (said.find("warning: failover state: " + dir + " is not a directory of uid 12346") ==
                           std::string::npos ||
                       said.find("remembered in this process only") == std::string::npos)
                       return "no warning: " + said;
                   return std::string();
               }) == "");
}

BOOST_AUTO_TEST_SUITE_END()
