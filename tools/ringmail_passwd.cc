// ringmail-passwd — makes a line for submission.credentials_file.
//
//   ringmail-passwd [-i ITERATIONS] USER  < password
//
// Reads the password from standard input (the first line, without its line
// end; the terminal echo is not touched, so pipe it or type it blind) and
// prints "USER:ITERATIONS:SALT-HEX:HASH-HEX": PBKDF2-HMAC-SHA256 with a
// random 16-byte salt (engine/submission_auth.h). The password itself is
// never printed or stored. Exit status 0, or 2 on bad usage or input.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "engine/submission_auth.h"
#include "tools/cli_number.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: ringmail-passwd [-i ITERATIONS] USER < password\n"
               "  prints USER:ITERATIONS:SALT:HASH for submission.credentials_file\n"
               "  (PBKDF2-HMAC-SHA256, random salt; default %u iterations)\n",
               ringmail::engine::CredentialStore::kDefaultIterations);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t iterations = ringmail::engine::CredentialStore::kDefaultIterations;
  std::string user;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "-i" || a == "--iterations") && i + 1 < argc) {
      std::string error;
      if (!ringmail::tools::parse_whole_number(
              a, argv[++i], ringmail::engine::CredentialStore::kMinIterations,
              ringmail::engine::CredentialStore::kMaxIterations, &iterations, &error)) {
        std::fprintf(stderr, "ringmail-passwd: %s\n", error.c_str());
        return usage();
      }
    } else if (a == "-h" || a == "--help" || !user.empty()) {
      return usage();
    } else {
      user = a;
    }
  }
  if (user.empty()) {
    return usage();
  }
  std::string password;
  for (int c = std::getchar(); c != EOF && c != '\n'; c = std::getchar()) {
    password.push_back(static_cast<char>(c));
  }
  if (!password.empty() && password.back() == '\r') {
    password.pop_back();
  }
  if (password.empty()) {
    std::fprintf(stderr, "ringmail-passwd: empty password on standard input\n");
    return 2;
  }
  auto line = ringmail::engine::make_credential_line(user, password, iterations);
  std::fill(password.begin(), password.end(), '\0');
  if (!line.ok()) {
    std::fprintf(stderr, "ringmail-passwd: %s\n", line.error().message.c_str());
    return 2;
  }
  std::printf("%s\n", line->c_str());
  return 0;
}
