using BenchmarkDotNet.Running;
using RetriKT.MLNet.Benchmarks;

// `dotnet run -c Release -- teacher [--quick]`: side-by-side teacher numbers in one process (KV cache speed-up,
// training throughput and achieved fraction of the measured fp32 matmul rate).
// Anything else goes to BenchmarkDotNet (e.g. `-- --filter *TeacherGeneration*`).
if (args.Length > 0 && args[0] == "teacher")
{
    TeacherReport.Run(args.Contains("--quick"));
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(TeacherReport).Assembly).Run(args);
