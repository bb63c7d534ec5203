/// dkim_util.h — helpers for the DKIM end-to-end tests: keys made by the
/// openssl CLI (and their DNS records derived by openssl, not by ringmail),
/// and dkimpy (Debian python3-dkim, python3-nacl for Ed25519) as the
/// independent verifier, fed the public keys through its dnsfunc hook.
///
/// Environment: PYTHON3 (default /usr/bin/python3: Debian's interpreter,
/// which has the Debian modules), OPENSSL (default /usr/bin/openssl).
/// Single-threaded test use.
#pragma once

#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>

#include "proto/dkim.h"

namespace ringmail::dkimtest {

inline std::string env_or(const char* name, const char* def) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : def;
}
inline std::string python() {
  return env_or("PYTHON3", "/usr/bin/python3");
}
inline std::string openssl() {
  return env_or("OPENSSL", "/usr/bin/openssl");
}

/// Runs a shell command; returns its stdout, and the exit status in *rc.
inline std::string run(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *rc = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) {
    out.append(buf, n);
  }
  int status = pclose(p);
  *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  EXPECT_TRUE(out.good()) << path;
}

/// Empty when dkimpy (and nacl) import; otherwise what to install.
inline std::string dkimpy_missing() {
  int rc = 0;
  run(python() + " -c 'import dkim, nacl' 2>&1", &rc);
  return rc == 0 ? ""
                 : python() +
                       " cannot import dkim and nacl: install python3-dkim and "
                       "python3-nacl (Debian) for this test";
}

/// Makes a key with openssl (`gen` holds the arguments, OUT is replaced by
/// <dir>/<name>.pem) and returns its DKIM key record "v=DKIM1; k=...; p=...",
/// derived from openssl's SubjectPublicKeyInfo export.
inline std::string openssl_key(const std::string& dir, const std::string& name, std::string gen,
                               bool ed25519) {
  int rc = 0;
  std::string pem = dir + "/" + name + ".pem";
  gen.replace(gen.find("OUT"), 3, "'" + pem + "'");
  std::string out = run(openssl() + " " + gen + " 2>&1", &rc);
  EXPECT_EQ(rc, 0) << gen << ": " << out;
  std::string der = dir + "/" + name + ".pub.der";
  out =
      run(openssl() + " pkey -in '" + pem + "' -pubout -outform DER -out '" + der + "' 2>&1", &rc);
  EXPECT_EQ(rc, 0) << out;
  std::string spki = slurp(der);
  if (ed25519) {
    // SubjectPublicKeyInfo of an Ed25519 key: 12 header bytes + the key.
    EXPECT_EQ(spki.size(), 44u);
    std::string raw = spki.size() == 44 ? spki.substr(12) : std::string();
    return "v=DKIM1; k=ed25519; p=" +
           proto::base64({reinterpret_cast<const uint8_t*>(raw.data()), raw.size()});
  }
  return "v=DKIM1; k=rsa; p=" +
         proto::base64({reinterpret_cast<const uint8_t*>(spki.data()), spki.size()});
}

/// The verifier. Reads a manifest of "case<TAB>file<TAB>nsig<TAB>name=record..."
/// lines; prints "case<TAB>PASS|FAIL ..." (one verdict per signature index).
inline constexpr const char* kDkimpyVerifier = R"PY(
import sys
import dkim

def main(manifest):
    for line in open(manifest, encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        case, path, nsig = parts[0], parts[1], int(parts[2])
        records = {}
        for r in parts[3:]:
            name, rec = r.split("=", 1)
            records[name.encode()] = rec.encode()
        def dnsfunc(name, timeout=5):
            return records.get(name)
        msg = open(path, "rb").read()
        verdicts = []
        for i in range(nsig):
            try:
                d = dkim.DKIM(msg, minkey=1024)
                ok = d.verify(idx=i, dnsfunc=dnsfunc)
            except Exception:
                ok = False
            verdicts.append("PASS" if ok else "FAIL")
        print(case + "\t" + " ".join(verdicts), flush=True)

main(sys.argv[1])
)PY";

/// Runs dkimpy over `manifest` (written into `dir`); returns case ->
/// "PASS FAIL ..." and the raw output in *out.
inline std::map<std::string, std::string> dkimpy_verify(const std::string& dir,
                                                        const std::string& manifest,
                                                        std::string* out) {
  static int n = 0;
  std::string path = dir + "/manifest" + std::to_string(++n) + ".tsv";
  write_file(path, manifest);
  write_file(dir + "/verify.py", kDkimpyVerifier);
  int rc = 0;
  *out = run(python() + " '" + dir + "/verify.py' '" + path + "' 2>&1", &rc);
  EXPECT_EQ(rc, 0) << *out;
  std::map<std::string, std::string> verdicts;
  std::istringstream lines(*out);
  std::string line;
  while (std::getline(lines, line)) {
    size_t tab = line.find('\t');
    if (tab != std::string::npos) {
      verdicts[line.substr(0, tab)] = line.substr(tab + 1);
    }
  }
  return verdicts;
}

}  // namespace ringmail::dkimtest
