// RetriKT.MLNet Quickstart — the whole RetriKT pipeline in one command:
//   few-shot data → teacher LLM + soft prompts (supervised, then PPO) → knowledge extraction → RetrievalClassifier
//   → evaluation → model.zip → reload in a fresh MLContext → predictions with explanations.
//
//   dotnet run --project samples/RetriKT.Quickstart -c Release                       (embedded default task + teacher)
//   dotnet run --project samples/RetriKT.Quickstart -c Release -- --teacher <HF dir or llama2.c .bin> --data <folder> --task SST-2 --seed 13
//   dotnet run --project samples/RetriKT.Quickstart -c Release -- --teacher <dir> --train train.tsv --dev dev.tsv --test test.tsv --verbalizer neg=terrible,pos=great
//                                                                                     (your own task: text + label columns)
//   dotnet run --project samples/RetriKT.Quickstart -c Release -- --help             (all options)
//
// Exit codes: 0 done (and --help), 2 bad input (one line on stderr naming the option, file or row), 130 cancelled by
// Ctrl-C or SIGTERM (one line on stderr: what was running, what is kept), 1 anything else.
using System.CommandLine;
using System.Runtime.InteropServices;
using RetriKT.MLNet;
using RetriKT.Quickstart;

// Ctrl-C and SIGTERM (docker stop, systemd, a CI timeout) cancel the run: the running stage stops at its next step, and the
// Quickstart says what it kept. A second one ends the process at once (the runtime's default), for a stage slow to stop.
using var cancellation = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => e.Cancel = Cancel();
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => context.Cancel = Cancel());

var command = QuickstartOptions.Command(options => new QuickstartRun(options, cancellation.Token).Execute());
var parse = command.Parse(args);
if (parse.Errors.Count > 0)
    return Fail(2, $"{parse.Errors[0].Message} (run with --help for the options)");
try
{
    return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (InputException e)
{
    return Fail(2, e.Message);
}
catch (OperationCanceledException e) when (cancellation.IsCancellationRequested)
{
    Console.Error.WriteLine($"Cancelled: {e.Message}");
    return 130;
}
catch (Exception e) when (e is not OutOfMemoryException)
{
    return Fail(1, $"the Quickstart failed: {ModelFiles.Describe(e)} ({QuickstartRun.LogHint})");
}

// The first signal cancels and keeps the process (true); a later one is left to the runtime, which ends it.
bool Cancel()
{
    if (cancellation.IsCancellationRequested) return false;
    cancellation.Cancel();
    return true;
}

static int Fail(int code, string message)
{
    Console.Error.WriteLine($"error: {message}");
    return code;
}
