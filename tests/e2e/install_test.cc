// The installed library as an embedder meets it: `meson install` into a
// temporary directory, the examples (examples/c, examples/cpp) compiled
// there with the system compiler and nothing but
// `pkg-config --cflags --libs ringmail`, then run against ringmail-sink on
// loopback.
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>

#include <set>
#include <sstream>

#include "tests/e2e/harness.h"

namespace ringmail::testing {
namespace {

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) {
    out.push_back(w);
  }
  return out;
}

std::set<std::string> dir_entries(const std::string& path) {
  std::set<std::string> out;
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) {
    return out;
  }
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") {
      out.insert(name);
    }
  }
  ::closedir(d);
  return out;
}

std::string link_target(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

/// Runs argv to completion in `work`; returns its stdout, failing the test
/// (with its stderr) unless it exits 0.
std::string run(const std::vector<std::string>& argv, const TempDir& work, const std::string& tag,
                milliseconds timeout = milliseconds(120'000)) {
  Child c;
  if (!c.start(argv, work.path(), tag)) {
    ADD_FAILURE() << "cannot start " << argv[0];
    return "";
  }
  int rc = c.wait(timeout);
  EXPECT_EQ(rc, 0) << tag << ": " << argv[0] << " exited " << rc << "\n" << c.out() << c.err();
  return c.out();
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

TEST(Install, ExamplesBuildWithPkgConfigFromTheInstalledTreeAndDeliver) {
  const std::string build_root = env_or("RINGMAIL_BUILD_ROOT", "");
  const std::string source_root = env_or("RINGMAIL_SOURCE_ROOT", "");
  ASSERT_FALSE(build_root.empty() || source_root.empty()) << "run through meson test";
  TempDir dest;  // the DESTDIR
  TempDir work;  // logs and the examples' binaries

  run({env_or("MESON", "meson"), "install", "-C", build_root, "--no-rebuild", "--quiet",
       "--destdir", dest.path()},
      work, "meson-install");

  const std::string prefix = env_or("RINGMAIL_PREFIX", "/usr/local");
  auto under_prefix = [&](const std::string& d) { return d[0] == '/' ? d : prefix + "/" + d; };
  const std::string libdir = dest.path() + under_prefix(env_or("RINGMAIL_LIBDIR", "lib"));
  const std::string incdir = dest.path() + under_prefix(env_or("RINGMAIL_INCLUDEDIR", "include"));
  const std::string version = env_or("RINGMAIL_VERSION", "");
  const std::string major = version.substr(0, version.find('.'));

  // Only the public headers, and the shared library with its soname links.
  EXPECT_EQ(dir_entries(incdir + "/ringmail"),
            (std::set<std::string>{"ringmail.hpp", "ringmail_c.h", "version.h"}));
  EXPECT_EQ(link_target(libdir + "/libringmail.so"), "libringmail.so." + major);
  EXPECT_EQ(link_target(libdir + "/libringmail.so." + major), "libringmail.so." + version);
  for (const auto& name : dir_entries(libdir)) {
    EXPECT_EQ(name.find(".a"), std::string::npos) << "a static library was installed: " << name;
  }

  // pkg-config over the DESTDIR: the sysroot maps the .pc file's prefix
  // onto it.
  ASSERT_EQ(::setenv("PKG_CONFIG_PATH", (libdir + "/pkgconfig").c_str(), 1), 0);
  ASSERT_EQ(::setenv("PKG_CONFIG_SYSROOT_DIR", dest.path().c_str(), 1), 0);
  const std::string pkg_config = env_or("PKG_CONFIG", "pkg-config");
  EXPECT_EQ(trimmed(run({pkg_config, "--modversion", "ringmail"}, work, "modversion")), version);
  const std::string libs = trimmed(run({pkg_config, "--libs", "ringmail"}, work, "libs"));
  const std::string cflags = trimmed(run({pkg_config, "--cflags", "ringmail"}, work, "cflags"));
  std::cout << "pkg-config --libs ringmail: " << libs
            << "\npkg-config --cflags ringmail: " << cflags << "\n";
  EXPECT_NE(libs.find("-L" + libdir), std::string::npos) << libs;
  EXPECT_NE(libs.find("-lringmail"), std::string::npos) << libs;
  // The library links its own dependencies: a dynamic link needs none.
  EXPECT_EQ(libs.find("-luring"), std::string::npos) << libs;
  EXPECT_EQ(libs.find("-lwolfssl"), std::string::npos) << libs;
  EXPECT_EQ(libs.find("-lcares"), std::string::npos) << libs;

  // Both examples at once: each is one small file.
  auto compile = [&](const std::string& compiler, std::vector<std::string> flags,
                     const std::string& source, const std::string& out, Child& child) {
    std::vector<std::string> argv = words(compiler);
    argv.insert(argv.end(), flags.begin(), flags.end());
    for (const auto& f : words(env_or("EXAMPLE_FLAGS", ""))) {
      argv.push_back(f);
    }
    argv.push_back(source_root + "/" + source);
    for (const auto& f : words(cflags + " " + libs)) {
      argv.push_back(f);
    }
    argv.push_back("-Wl,-rpath," + libdir);
    argv.push_back("-o");
    argv.push_back(work.file(out));
    return child.start(argv, work.path(), out + "-build");
  };
  Child cxx_build, c_build;
  ASSERT_TRUE(compile(env_or("EXAMPLE_CXX", "c++"), {"-std=c++20", "-Wall", "-Wextra", "-Werror"},
                      "examples/cpp/deliver.cc", "deliver-cpp", cxx_build));
  ASSERT_TRUE(compile(env_or("EXAMPLE_CC", "cc"),
                      {"-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"},
                      "examples/c/deliver.c", "deliver-c", c_build));
  ASSERT_EQ(cxx_build.wait(), 0) << cxx_build.err();
  ASSERT_EQ(c_build.wait(), 0) << c_build.err();

  // The examples find the installed library through their run path
  // only, never the build tree's.
  ASSERT_EQ(::unsetenv("LD_LIBRARY_PATH"), 0);
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  const std::string route = "127.0.0.1:" + std::to_string(sink.port());
  for (const std::string example : {"deliver-cpp", "deliver-c"}) {
    std::string out = run({work.file(example), route}, work, example, milliseconds(60'000));
    EXPECT_NE(out.find("ringmail " + version + " (headers " + version + ")"), std::string::npos)
        << example << ":\n"
        << out;
    EXPECT_NE(out.find("accepted 3"), std::string::npos) << example << ":\n" << out;
    EXPECT_NE(out.find("rejected recipient 2"), std::string::npos) << example << ":\n" << out;
    size_t delivered_events = 0;
    for (size_t at = out.find("\"type\":\"delivered\""); at != std::string::npos;
         at = out.find("\"type\":\"delivered\"", at + 1)) {
      ++delivered_events;
    }
    EXPECT_EQ(delivered_events, 3u) << example << ":\n" << out;
  }
  // The sink counts what it accepted, independently of the examples.
  EXPECT_TRUE(sink.wait_stat("recipients", 6)) << sink.stats();
}

}  // namespace
}  // namespace ringmail::testing
