// Command-line parsing for the subcommands of `rosetta` over Abseil's flag registry.
//
// absl::ParseCommandLine accepts every flag linked into the program and exits with status 1 on a
// bad one. Each subcommand of `rosetta` accepts only its own flags, and usage errors exit with
// status 2, so the flags are looked up and parsed here through Abseil's public reflection API
// (absl::FindCommandLineFlag, CommandLineFlag::ParseFrom). Not thread-safe: call from main only.
#ifndef ROSETTA_CLIENT_COMMAND_LINE_H_
#define ROSETTA_CLIENT_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace rosetta::client {

struct ParsedArguments {
  std::vector<std::string> positional;  // the arguments that are not flags, in order
  bool help = false;                    // --help (or -h) was given
};

// Sets the flags given in `args` (the arguments after the subcommand's name) and returns the
// other arguments. Accepts `--name=value`, `--name value`, a single leading dash instead of two,
// `--name` / `--noname` for booleans, and `--` to end the flags (what follows is positional even
// if it starts with a dash). Returns InvalidArgumentError, naming the argument, for a flag that
// does not exist or is not in `allowed`, and for a missing or malformed value.
absl::StatusOr<ParsedArguments> ParseArguments(const std::vector<std::string>& args,
                                               absl::Span<const absl::string_view> allowed);

// One line per flag of `allowed`: "  --name  help (default: value)", with the flag's current value.
std::string FlagsHelp(absl::Span<const absl::string_view> allowed);

}  // namespace rosetta::client

#endif  // ROSETTA_CLIENT_COMMAND_LINE_H_
