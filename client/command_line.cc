#include "client/command_line.h"

#include <algorithm>
#include <optional>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rosetta::client {
namespace {

bool IsAllowed(absl::string_view name, absl::Span<const absl::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), name) != allowed.end();
}

// The allowed flag called `name`, or nullptr.
absl::CommandLineFlag* FindAllowedFlag(absl::string_view name,
                                       absl::Span<const absl::string_view> allowed) {
  if (!IsAllowed(name, allowed)) return nullptr;
  return absl::FindCommandLineFlag(name);
}

}  // namespace

absl::StatusOr<ParsedArguments> ParseArguments(const std::vector<std::string>& args,
                                               absl::Span<const absl::string_view> allowed) {
  ParsedArguments parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      parsed.positional.insert(parsed.positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    // A lone "-" conventionally means stdin; it and non-dash arguments are texts.
    if (arg.size() < 2 || arg[0] != '-') {
      parsed.positional.push_back(arg);
      continue;
    }
    absl::string_view body = arg;
    body.remove_prefix(absl::StartsWith(body, "--") ? 2 : 1);
    if (body == "help" || body == "h") {
      parsed.help = true;
      continue;
    }
    const size_t equals = body.find('=');
    const absl::string_view name = body.substr(0, equals);
    std::optional<std::string> value;
    if (equals != absl::string_view::npos) value = std::string(body.substr(equals + 1));

    absl::CommandLineFlag* flag = FindAllowedFlag(name, allowed);
    if (flag == nullptr && !value.has_value() && absl::StartsWith(name, "no")) {
      // --noflag sets a boolean flag to false.
      absl::CommandLineFlag* negated = FindAllowedFlag(name.substr(2), allowed);
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        value = "false";
      }
    }
    if (flag == nullptr) {
      const bool elsewhere = absl::FindCommandLineFlag(name) != nullptr;
      return absl::InvalidArgumentError(
          absl::StrCat(elsewhere ? "this command has no flag " : "unknown flag ", arg));
    }
    if (!value.has_value()) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("flag ", arg, " needs a value"));
      }
    }
    std::string error;
    if (!flag->ParseFrom(*value, &error)) {
      return absl::InvalidArgumentError(error);  // names the value and the flag
    }
  }
  return parsed;
}

std::string FlagsHelp(absl::Span<const absl::string_view> allowed) {
  std::string help;
  for (absl::string_view name : allowed) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    absl::StrAppendFormat(&help, "  --%-16s %s", name, flag->Help());
    // The value before parsing: a command may set its own default (health: a short deadline),
    // and ROSETTA_ADDRESS replaces the default address.
    const std::string default_value = flag->CurrentValue();
    if (!default_value.empty() && !flag->IsOfType<bool>()) {
      absl::StrAppend(&help, " (default: ", default_value, ")");
    }
    absl::StrAppend(&help, "\n");
  }
  return help;
}

}  // namespace rosetta::client
