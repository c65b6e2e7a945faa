// RetriKT.MLNet Quickstart — the whole RetriKT pipeline in one command:
//   few-shot data → teacher LLM + soft prompts (supervised, then PPO) → knowledge extraction → RetrievalClassifier
//   → evaluation → model.zip → reload in a fresh MLContext → predictions with explanations.
//
//   dotnet run --project samples/RetriKT.Quickstart -c Release                       (embedded default task + teacher)
//   dotnet run --project samples/RetriKT.Quickstart -c Release -- --teacher <HF dir or llama2.c .bin> --data <folder> --task SST-2 --seed 13
//
// Options: --out <folder> (default ./retrikt-quickstart), --ppo-steps N, --samples-per-label N, --quick (smaller, for CI smoke runs).
using RetriKT.Quickstart;
using Spectre.Console;

try
{
    var options = QuickstartOptions.Parse(args);
    return new QuickstartRun(options).Execute();
}
catch (ArgumentException e)
{
    AnsiConsole.MarkupLineInterpolated($"[red]{e.Message}[/]");
    AnsiConsole.WriteLine(QuickstartOptions.Usage);
    return 2;
}
