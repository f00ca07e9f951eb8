// The exit report (exit_report.cc) with caches that are never destroyed, held
// by a static, or in use by other threads while the process exits. Each
// scenario runs in a child process (this binary re-executed with
// DROPALLOC_STATS=1); it must exit 0 within a few seconds and print one
// report per cache.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "integrations/rocksdb/secondary_cache.h"
#include "integrations/rocksdb/tests/string_item.h"

namespace {

using namespace dropalloc::rocks;
using namespace dropalloc::rocks::testing;

std::shared_ptr<rocksdb::SecondaryCache> g_static_cache;  // destroyed by static destructors

void hammer(std::shared_ptr<rocksdb::SecondaryCache> c, int t) {  // keeps the cache alive
  for (long i = 0;; ++i) {
    std::string key = "k" + std::to_string((i * 7 + t) % 64);
    std::string v = value_for(key, 3000);
    (void)c->Insert(key, &v, &kHelper);
    bool in = false;
    auto h = c->Lookup(key, create_string(), true, false, in);
    if (h) {
      std::unique_ptr<std::string> got(static_cast<std::string*>(h->Value()));
      if (*got != v) {
        std::fprintf(stderr, "WRONG BLOCK\n");
        std::_Exit(3);
      }
    }
    if (i % 97 == 0) static_cast<secondary_cache*>(c.get())->drop_all_for_testing();
  }
}

void child(const std::string& mode) {
  std::shared_ptr<rocksdb::SecondaryCache> sc;
  if (mode == "leaked" || mode == "busy") {
    REQUIRE(secondary_cache::create("dropalloc://", &sc).ok());
    auto* leaked = new std::shared_ptr<rocksdb::SecondaryCache>(sc);  // never destroyed
    (void)leaked;
  } else if (mode == "static" || mode == "static_idle") {
    REQUIRE(secondary_cache::create("dropalloc://seal=0", &g_static_cache).ok());
    sc = g_static_cache;
  } else if (mode == "two") {
    REQUIRE(secondary_cache::create("dropalloc://", &g_static_cache).ok());
    REQUIRE(secondary_cache::create("dropalloc://capacity=1M", &sc).ok());
    new std::shared_ptr<rocksdb::SecondaryCache>(sc);
  }
  std::string v = value_for("x", 100);
  REQUIRE(sc->Insert("x", &v, &kHelper).ok());
  if (mode == "busy" || mode == "static" || mode == "two") {
    for (int t = 0; t < 3; ++t) std::thread(hammer, sc, t).detach();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  sc.reset();
  std::exit(0);  // threads still running
}

int run_child(const std::string& mode, std::string* err) {
  std::string errfile = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") +
                        "/exit_report_" + mode + ".err";
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::freopen(errfile.c_str(), "w", stderr);
    (void)f;
    setenv("EXIT_REPORT_CHILD", mode.c_str(), 1);
    setenv("DROPALLOC_STATS", "1", 1);
    execl("/proc/self/exe", "exit_report_test", "--test-case=child", nullptr);
    _exit(127);
  }
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      *err = "hung";
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::ifstream in(errfile);
  std::stringstream ss;
  ss << in.rdbuf();
  *err = ss.str();
  return status;
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("child") {
  const char* mode = std::getenv("EXIT_REPORT_CHILD");
  if (mode != nullptr) child(mode);
}

TEST_CASE("exit with caches leaked, static, or busy on other threads") {
  for (std::string mode : {"leaked", "busy", "static", "static_idle", "two"}) {
    CAPTURE(mode);
    std::string err;
    int status = run_child(mode, &err);
    INFO("child stderr:\n", err.substr(0, 2000));
    CHECK(err != "hung");
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(count(err, "WRONG BLOCK") == 0);
    CHECK(count(err, "dropalloc RocksDB secondary cache") == (mode == "two" ? 2 : 1));
  }
}
