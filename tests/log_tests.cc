// log: which sink is chosen, and what reaches it.  The journal cases run
// in a forked child with a mount namespace of its own: a tmpfs on /run
// holds a datagram socket at the path libsystemd sends to
// (/run/systemd/journal/socket, fixed in the library), a tmpfs on /dev a
// stand-in for syslog's /dev/log.  They need root (unshare, mount), as
// the whole suite does; without it they fail.
#include "log.hh"

#include "child_check.hh"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <sched.h>
#include <string>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace sockmapd;

namespace
{

std::string dev_ino(int fd)
{
    struct stat st {
    };
    fstat(fd, &st);
    return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

// A datagram socket bound at `path`, with a receive timeout.
int datagram_at(const std::string& path)
{
    const int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
        throw std::runtime_error("bind " + path + ": " + std::strerror(errno));
    const timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

// In the child: private mounts, empty /run and /dev; the journal socket
// when `journal`.  Returns the journal's fd (or -1) and sets `syslog_fd`.
int private_journal(bool journal, int& syslog_fd)
{
    if (unshare(CLONE_NEWNS) != 0)
        throw std::runtime_error(std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno));
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("tmpfs", "/run", "tmpfs", 0, nullptr) != 0 || mount("tmpfs", "/dev", "tmpfs", 0, nullptr) != 0)
        throw std::runtime_error(std::string("mount: ") + std::strerror(errno));
    syslog_fd = datagram_at("/dev/log");
    if (!journal)
        return -1;
    mkdir("/run/systemd", 0755);
    mkdir("/run/systemd/journal", 0755);
    return datagram_at("/run/systemd/journal/socket");
}

// One datagram (up to 1 MiB); a payload passed as a memfd (too large for a datagram) is read from it.
std::string receive(int fd)
{
    std::string buf(1 << 20, '\0');
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(fd, &msg, 0);
    if (n < 0)
        return "(nothing received)";
    const cmsghdr* c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int memfd = -1;
        std::memcpy(&memfd, CMSG_DATA(c), sizeof memfd);
        std::string out;
        char b[65536];
        ssize_t r;
        while ((r = pread(memfd, b, sizeof b, static_cast<off_t>(out.size()))) > 0)
            out.append(b, static_cast<std::size_t>(r));
        close(memfd);
        return out;
    }
    buf.resize(static_cast<std::size_t>(n));
    return buf;
}

std::string missing(const std::string& got, std::initializer_list<const char*> wanted)
{
    for (const char* w : wanted)
        if (got.find(w) == std::string::npos)
            return std::string("no \"") + w + "\" in: " + got.substr(0, 300);
    return {};
}

// fd 2 becomes one end of a stream socketpair (as systemd's journal stream
// is); the other end is returned.
int stderr_stream_socket()
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        throw std::runtime_error("socketpair");
    dup2(sv[0], 2);
    close(sv[0]);
    return sv[1];
}

} // namespace

BOOST_AUTO_TEST_SUITE(log_sinks)

BOOST_AUTO_TEST_CASE(journal_stream_names_device_and_inode)
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    const std::string mine = dev_ino(sv[0]);
    BOOST_TEST(is_journal_stream(mine.c_str(), sv[0]));
    BOOST_TEST(!is_journal_stream(mine.c_str(), sv[1])); // another socket
    BOOST_TEST(!is_journal_stream(dev_ino(sv[1]).c_str(), sv[0]));
    BOOST_TEST(!is_journal_stream(nullptr, sv[0]));
    BOOST_TEST(!is_journal_stream("", sv[0]));
    BOOST_TEST(!is_journal_stream((mine + "x").c_str(), sv[0]));
    BOOST_TEST(!is_journal_stream("12", sv[0]));
    BOOST_TEST(!is_journal_stream(mine.c_str(), -1));
    close(sv[0]);
    close(sv[1]);
}

BOOST_AUTO_TEST_CASE(default_sink_table)
{
    struct Case {
        bool journal_stream, service, stderr_private;
        LogSink sink;
    };
    const Case cases[] = {
        {true, false, false, LogSink::Journal}, // Accept=yes unit: stderr is the journal stream
        {false, true, false, LogSink::Journal}, // systemd's service with StandardError=socket
        {true, true, false, LogSink::Journal},  {false, false, true, LogSink::Stderr}, // a shell, a supervisor's pipe
        {false, false, false, LogSink::Syslog}, // xinetd: stderr is the client's socket
        {false, true, true, LogSink::Journal},
    };
    for (const auto& c : cases) {
        LogFacts f;
        f.stderr_is_journal = c.journal_stream;
        f.systemd_service = c.service;
        f.stderr_private = c.stderr_private;
        BOOST_TEST(static_cast<int>(default_sink(f)) == static_cast<int>(c.sink));
    }
}

BOOST_AUTO_TEST_CASE(facts_from_the_environment)
{
    // xinetd started by systemd passes INVOCATION_ID and JOURNAL_STREAM on to
    // its handlers, whose stderr is the client's socket: neither counts.
    BOOST_TEST(in_child([] {
                   const int peer = stderr_stream_socket();
                   setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef", 1);
                   setenv("JOURNAL_STREAM", dev_ino(peer).c_str(), 1); // names another socket
                   unsetenv("LISTEN_PID");
                   const LogFacts f = log_facts();
                   if (getppid() == 1)
                       return std::string("test runs as a child of pid 1: cannot tell");
                   if (f.stderr_is_journal || f.systemd_service || f.stderr_private)
                       return std::string("inherited variables taken for systemd");
                   return std::string();
               }) == "");
    // Accept=yes unit: stderr is the journal's stream.
    BOOST_TEST(in_child([] {
                   stderr_stream_socket();
                   setenv("JOURNAL_STREAM", dev_ino(2).c_str(), 1);
                   const LogFacts f = log_facts();
                   return f.stderr_is_journal && !f.stderr_private ? std::string() : std::string("not the journal");
               }) == "");
    // Sockets passed by systemd to us: a service of its own.
    BOOST_TEST(in_child([] {
                   setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef", 1);
                   setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
                   unsetenv("JOURNAL_STREAM");
                   return log_facts().systemd_service ? std::string() : std::string("not a service");
               }) == "");
    // A pipe on stderr is private.
    BOOST_TEST(in_child([] {
                   int p[2];
                   if (pipe(p) != 0)
                       return std::string("pipe");
                   dup2(p[1], 2);
                   return log_facts().stderr_private ? std::string() : std::string("pipe not private");
               }) == "");
}

BOOST_AUTO_TEST_CASE(journal_gets_fields_and_level)
{
    const std::string r = in_child([] {
        int syslog_fd = -1;
        const int journal = private_journal(true, syslog_fd);
        LogFacts f;
        f.stderr_is_journal = true;
        log_init(f);
        log_setup(LogLevel::Info, "");
        if (log_sink() != LogSink::Journal)
            return std::string("sink is not the journal");
        log_debug("below the level");
        log_warning("db1 down",
                    {{"SOCKMAP_MAP", "recipient"}, {"SOCKMAP_EMPTY", ""}, {"SOCKMAP_REQUESTS", "7", false}});
        const std::string got = receive(journal);
        if (got.find("below the level") != std::string::npos || got.find("SOCKMAP_EMPTY") != std::string::npos)
            return "debug line or empty field sent: " + got;
        return missing(got, {"MESSAGE=db1 down\n", "PRIORITY=4\n", "SYSLOG_IDENTIFIER=sockmapd\n",
                             "SOCKMAP_MAP=recipient\n", "SOCKMAP_REQUESTS=7\n"});
    });
    BOOST_TEST(r == "");
}

BOOST_AUTO_TEST_CASE(journal_message_larger_than_a_datagram)
{
    const std::string r = in_child([] {
        int syslog_fd = -1;
        const int journal = private_journal(true, syslog_fd);
        LogFacts f;
        f.systemd_service = true;
        log_init(f);
        log_setup(LogLevel::Info, "");
        // Past the default datagram size (libsystemd raises its send buffer,
        // or passes a memfd when even that is too small).
        const std::string big(400 * 1024, 'x');
        log_error(big + "END");
        const std::string got = receive(journal);
        if (const std::string m = missing(got, {"MESSAGE=xxxx", "xxxxEND\n", "PRIORITY=3\n"}); !m.empty())
            return m;
        // Past the 8 MiB it raises the buffer to: the memfd.
        const std::string huge(9 * 1024 * 1024, 'y');
        log_error(huge + "END");
        const std::string got2 = receive(journal);
        if (got2.size() < huge.size())
            return "memfd message cut to " + std::to_string(got2.size());
        return missing(got2, {"MESSAGE=yyyy", "yyyyEND\n"});
    });
    BOOST_TEST(r == "");
}

BOOST_AUTO_TEST_CASE(journal_missing_falls_back_to_syslog)
{
    const std::string r = in_child([] {
        int syslog_fd = -1;
        private_journal(false, syslog_fd);
        LogFacts f;
        f.stderr_is_journal = true;
        log_init(f);
        log_setup(LogLevel::Info, "");
        log_error("nobody listens", {{"SOCKMAP_MAP", "m"}, {"SOCKMAP_REQUESTS", "7", false}});
        const std::string got = receive(syslog_fd);
        // The journal-only field stays out of the text the message already says.
        if (got.find("SOCKMAP_REQUESTS") != std::string::npos)
            return "journal-only field in the syslog text: " + got;
        // <mail.err> = 2*8+3 = 19
        return missing(got, {"<19>", "sockmapd[", "nobody listens SOCKMAP_MAP=m"});
    });
    BOOST_TEST(r == "");
}

BOOST_AUTO_TEST_CASE(log_file_and_the_start_up_tee)
{
    const std::string r = in_child([] {
        char dir[] = "/tmp/sockmapd-log-XXXXXX";
        if (!mkdtemp(dir))
            return std::string("mkdtemp");
        const std::string file = std::string(dir) + "/s.log";
        const int err_fd = stderr_to_pipe();
        LogFacts f;
        f.stderr_private = true;
        log_init(f);
        log_setup(LogLevel::Info, file);
        log_tee_stderr(true);
        log_error("cannot bind");
        log_info("only in the file");
        log_tee_stderr(false);
        log_error("after start-up");
        char buf[4096];
        const ssize_t n = read(err_fd, buf, sizeof buf);
        const std::string err = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
        std::string text;
        if (const int fd = open(file.c_str(), O_RDONLY); fd >= 0) {
            const ssize_t m = read(fd, buf, sizeof buf);
            text.assign(buf, m > 0 ? static_cast<std::size_t>(m) : 0);
            close(fd);
        }
        unlink(file.c_str());
        rmdir(dir);
        if (err.find("error: cannot bind") == std::string::npos || err.find("only in the file") != std::string::npos ||
            err.find("after start-up") != std::string::npos)
            return "stderr: " + err;
        return missing(text, {"error: cannot bind", "info: only in the file", "error: after start-up"});
    });
    BOOST_TEST(r == "");
}

BOOST_AUTO_TEST_CASE(escape_keeps_lines_single)
{
    BOOST_TEST(log_escape("a\nb\"c\\") == "a\\x0ab\\x22c\\x5c");
    BOOST_TEST(log_escape(std::string(10, 'k'), 4) == "kkkk...");
    // Past ASCII too: C1 controls (here CSI as UTF-8), bytes that are not UTF-8.
    BOOST_TEST(log_escape("\xc2\x9b"
                          "2J\xff\x1b") == "\\xc2\\x9b2J\\xff\\x1b");
}

namespace
{

std::string file_text(const std::string& path)
{
    std::string text;
    if (const int fd = open(path.c_str(), O_RDONLY); fd >= 0) {
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0)
            text.append(buf, static_cast<std::size_t>(n));
        close(fd);
    }
    return text;
}

// A scratch directory for one child's log files.
std::string scratch_dir()
{
    char dir[] = "/tmp/sockmapd-log-XXXXXX";
    if (!mkdtemp(dir))
        throw std::runtime_error("mkdtemp");
    return dir;
}

void remove_dir(const std::string& dir)
{
    std::system(("rm -rf '" + dir + "'").c_str());
}

// The log file goes to the file sink, else the default one (a pipe on stderr here).
// The scratch directory is made and removed outside the child, which may
// have dropped root and could not remove what root left in it.
std::string file_check(const std::function<std::string(const std::string& dir)>& body)
{
    const std::string dir = scratch_dir();
    const std::string r = in_child([&] {
        stderr_to_pipe();
        LogFacts f;
        f.stderr_private = true;
        log_init(f);
        try {
            return body(dir);
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
    });
    remove_dir(dir);
    return r;
}

} // namespace

BOOST_AUTO_TEST_CASE(sinks_write_control_characters_escaped)
{
    BOOST_TEST(file_check([](const std::string& dir) {
                   const std::string file = dir + "/s.log";
                   log_setup(LogLevel::Info, file);
                   log_info("a\nforged: line\x1b[2J", {{"SOCKMAP_MAP", "m\r\nx"}});
                   const std::string text = file_text(file);
                   if (std::count(text.begin(), text.end(), '\n') != 1 || text.find('\x1b') != std::string::npos)
                       return "not one line: " + text;
                   return missing(text, {"a\\x0aforged: line\\x1b[2J SOCKMAP_MAP=m\\x0d\\x0ax\n"});
               }) == "");
}

// A log path the service user (or anyone who can write its directory) has
// pointed elsewhere is not followed, and nothing but a regular file of
// root, this process's user or run_as_user is written to.
BOOST_AUTO_TEST_CASE(log_file_refuses_links_fifos_and_strangers)
{
    BOOST_TEST(file_check([](const std::string& dir) {
                   const std::string target = dir + "/root-only", via = dir + "/link.log";
                   const int t = open(target.c_str(), O_WRONLY | O_CREAT, 0600);
                   close(t);
                   if (symlink(target.c_str(), via.c_str()) != 0)
                       return std::string("symlink");
                   log_setup(LogLevel::Info, via);
                   log_info("through the link");
                   if (log_sink() == LogSink::File || !file_text(target).empty())
                       return "followed the link: " + file_text(target);

                   const std::string fifo = dir + "/fifo.log"; // would block an open for writing
                   mkfifo(fifo.c_str(), 0600);
                   log_setup(LogLevel::Info, fifo);
                   if (log_sink() == LogSink::File)
                       return std::string("took a FIFO");

                   const std::string hard = dir + "/hard.log";
                   if (link(target.c_str(), hard.c_str()) != 0)
                       return std::string("link");
                   log_setup(LogLevel::Info, hard);
                   if (log_sink() == LogSink::File)
                       return std::string("took a file with two links");

                   const std::string theirs = dir + "/theirs.log";
                   close(open(theirs.c_str(), O_WRONLY | O_CREAT, 0600));
                   if (chown(theirs.c_str(), 12345, 12345) != 0)
                       return std::string("chown");
                   log_setup(LogLevel::Info, theirs);
                   if (log_sink() == LogSink::File)
                       return std::string("took a file of uid 12345");
                   log_setup(LogLevel::Info, theirs, {true, 12345, 12345});
                   if (log_sink() != LogSink::File)
                       return std::string("refused run_as_user's file");
                   return std::string();
               }) == "");
}

// Handlers started at once for concurrent connections all create the
// missing log file: each of them must end up writing to it.
BOOST_AUTO_TEST_CASE(handlers_creating_the_log_file_at_once_all_use_it)
{
    BOOST_TEST(file_check([](const std::string& dir) {
                   const std::string file = dir + "/new.log";
                   int go[2];
                   if (pipe(go) != 0)
                       return std::string("pipe");
                   std::vector<pid_t> kids;
                   for (int i = 0; i < 32; ++i) {
                       const pid_t pid = fork();
                       if (pid == 0) {
                           char c;
                           close(go[1]);
                           (void)!read(go[0], &c, 1); // all start together
                           log_setup(LogLevel::Info, file);
                           _exit(log_sink() == LogSink::File ? 0 : 1);
                       }
                       kids.push_back(pid);
                   }
                   close(go[0]);
                   close(go[1]); // EOF: go
                   int lost = 0;
                   for (const pid_t pid : kids) {
                       int status = 0;
                       waitpid(pid, &status, 0);
                       lost += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                   }
                   return lost == 0 ? std::string() : std::to_string(lost) + " of 32 did not use the log file";
               }) == "");
}

// --listen as root with run_as_user: the file it creates before the drop
// is the user's, so a reload after the drop reopens it; a file the user
// cannot reopen keeps the descriptor opened before.
BOOST_AUTO_TEST_CASE(reload_after_the_drop_keeps_the_log_file)
{
    BOOST_TEST(file_check([](const std::string& dir) {
                   if (chmod(dir.c_str(), 0755) != 0)
                       return std::string("chmod");
                   const std::string created = dir + "/new.log", old = dir + "/old.log";
                   const LogFileOwner owner{true, 65534, 65534};
                   close(open(old.c_str(), O_WRONLY | O_CREAT, 0600)); // root's, from before
                   log_setup(LogLevel::Info, created, owner);
                   struct stat st {
                   };
                   if (stat(created.c_str(), &st) != 0 || st.st_uid != 65534 || st.st_gid != 65534)
                       return "created as uid " + std::to_string(st.st_uid);
                   if (setgid(65534) != 0 || setuid(65534) != 0)
                       return std::string("setuid");
                   log_setup(LogLevel::Info, created, owner);
                   log_info("after the first reload");
                   if (std::string m = missing(file_text(created), {"info: after the first reload"}); !m.empty())
                       return m;
                   return std::string();
               }) == "");
    BOOST_TEST(file_check([](const std::string& dir) {
                   if (chmod(dir.c_str(), 0755) != 0)
                       return std::string("chmod");
                   const std::string old = dir + "/old.log";
                   close(open(old.c_str(), O_WRONLY | O_CREAT, 0600)); // root's, from before
                   const int reader = open(old.c_str(), O_RDONLY);
                   log_setup(LogLevel::Info, old, {true, 65534, 65534});
                   if (setgid(65534) != 0 || setuid(65534) != 0)
                       return std::string("setuid");
                   log_setup(LogLevel::Info, old, {true, 65534, 65534});
                   log_info("after the reload");
                   char buf[4096];
                   const ssize_t n = read(reader, buf, sizeof buf);
                   return missing(
                       std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0),
                       {"cannot reopen log file", "still writing to the one opened before", "info: after the reload"});
               }) == "");
}

BOOST_AUTO_TEST_SUITE_END()
