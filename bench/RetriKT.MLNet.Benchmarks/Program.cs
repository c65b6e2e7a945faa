// Usage: dotnet run -c Release --project bench/RetriKT.MLNet.Benchmarks -- --filter '*'
using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);

/// <summary>Entry point (BenchmarkDotNet picks benchmarks by --filter).</summary>
public partial class Program;
