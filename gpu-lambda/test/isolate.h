// bn_test's sections in child processes (fork), one at a time.
//
// Why: a device fault (an illegal or misaligned address, a trap) is sticky for the CUDA context,
// so in one process it fails every check and benchmark after it. A GPU session gets one call of
// the test program, and most of the opt-in kernels in it have not run on a GPU yet. In a child,
// a fault, a crash or a hang costs that section only: the parent records it as a failed check
// ("<section>/process") and starts the next. Each child creates its own CUDA context, so the
// parent must not touch CUDA itself (a context does not survive fork).
//
// The child reports each check line and benchmark row to the parent through a pipe as it makes
// it, so a child that dies midway keeps what it reported. Record: kind (1 byte: 'P' pass, 'F'
// fail, 'R' bench row), two u32 lengths, then the two strings (a check's markdown row and "", or a
// row's markdown and JSON). The child still prints its own lines to the shared stdout.
#pragma once
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

namespace bnt {

inline int g_child_fd = -1;  // in a child: the write end of the pipe to the parent; -1 in the parent
inline bool g_isolate = true;  // --no-isolate: run sections in-process (under compute-sanitizer)

// In a child: one record to the parent (nothing in the parent or without isolation).
inline void child_send(char kind, const std::string &a, const std::string &b = "") {
  if (g_child_fd < 0) return;
  const uint32_t len[2] = {(uint32_t)a.size(), (uint32_t)b.size()};
  std::string m(1, kind);
  m.append((const char *)len, sizeof len);
  m += a;
  m += b;
  const char *p = m.data();
  size_t left = m.size();
  while (left > 0) {
    const ssize_t w = write(g_child_fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // the parent is gone: nothing to report to
    p += w;
    left -= (size_t)w;
  }
}

struct ChildRecord {
  char kind;
  std::string a, b;
};

// How a child ended.
struct ChildEnd {
  bool ran = false;       // forked and waited for
  bool timed_out = false;  // killed at the time limit
  int exit_code = -1;      // when it exited
  int signal = 0;          // when a signal ended it
  double seconds = 0;
  bool clean() const { return ran && !timed_out && signal == 0 && exit_code == 0; }
  std::string str() const {
    char b[160];
    if (!ran) snprintf(b, sizeof b, "could not start a child process (%s)", strerror(errno));
    else if (timed_out) snprintf(b, sizeof b, "killed after its limit of %.0f s", seconds);
    else if (signal) snprintf(b, sizeof b, "ended by signal %d (%s) after %.1f s", signal, strsignal(signal), seconds);
    else snprintf(b, sizeof b, "exit status %d after %.1f s", exit_code, seconds);
    return b;
  }
};

// Runs fn in a child (or in-process when isolation is off), at most limit_s seconds (0: no limit),
// handing each record the child sends to on_record in the parent. fn returns the child's exit
// status (0 when it ran to its end; its failures are in its records).
inline ChildEnd run_child(double limit_s, const std::function<int()> &fn,
                          const std::function<void(const ChildRecord &)> &on_record) {
  ChildEnd end;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  if (!g_isolate) {
    end.ran = true;
    end.exit_code = fn();
    end.seconds = elapsed();
    return end;
  }
  int fds[2];
  fflush(stdout);
  fflush(stderr);
  if (pipe(fds) != 0) return end;
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return end;
  }
  if (pid == 0) {  // the child: run, report, leave without the parent's exit handlers
    close(fds[0]);
    g_child_fd = fds[1];
    const int code = fn();
    fflush(stdout);
    fflush(stderr);
    _exit(code);
  }
  close(fds[1]);
  end.ran = true;
  std::string buf;
  char chunk[65536];
  for (;;) {
    int wait_ms = -1;
    if (limit_s > 0) {
      const double left = limit_s - elapsed();
      if (left <= 0) {
        end.timed_out = true;
        kill(pid, SIGKILL);
        break;
      }
      wait_ms = (int)(left * 1000) + 1;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int r = poll(&p, 1, wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;  // the limit is checked at the top
    const ssize_t n = read(fds[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child has exited (or closed the pipe)
    buf.append(chunk, (size_t)n);
    size_t at = 0;
    while (buf.size() - at >= 9) {
      uint32_t len[2];
      memcpy(len, buf.data() + at + 1, sizeof len);
      if (buf.size() - at < 9 + (size_t)len[0] + len[1]) break;
      ChildRecord rec{buf[at], buf.substr(at + 9, len[0]), buf.substr(at + 9 + len[0], len[1])};
      on_record(rec);
      at += 9 + (size_t)len[0] + len[1];
    }
    buf.erase(0, at);
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  end.seconds = end.timed_out ? limit_s : elapsed();
  if (WIFEXITED(status)) end.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status) && !end.timed_out) end.signal = WTERMSIG(status);
  return end;
}

// A child that holds `open()`'s resource (a CUDA context) until the parent ends it or exits.
// Without the driver's persistence mode the GPU is torn down whenever its last context closes,
// and each new process then pays the driver's start-up again; one idle context kept open by this
// child spares every section that cost. The child blocks on a pipe and leaves at its EOF.
class Keeper {
 public:
  explicit Keeper(const std::function<bool()> &open) {
    if (!g_isolate) return;
    int fds[2];
    fflush(stdout);
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(fds[1]);
      const bool ok = open();
      char c;
      while (ok && read(fds[0], &c, 1) < 0 && errno == EINTR) {
      }
      _exit(0);
    }
    close(fds[0]);
    if (pid_ < 0) close(fds[1]);
    else fd_ = fds[1];
  }
  ~Keeper() {
    if (fd_ >= 0) close(fd_);
    if (pid_ > 0)
      while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
      }
  }
  Keeper(const Keeper &) = delete;
  Keeper &operator=(const Keeper &) = delete;

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

}  // namespace bnt
