using System.Diagnostics;
using Microsoft.ML;
using RetriKT.MLNet.RoundTrip;

namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>
/// What the child process saw after loading a model.zip. Disposing deletes the round trip's temp folder (the model,
/// the input and the child's output), so callers read <see cref="ModelPath"/> before that.
/// </summary>
public sealed record RoundTripResult(string ModelPath, IReadOnlyList<string> LoadedTypes, IReadOnlyList<string> Transform,
    IReadOnlyList<string>? Engine, IReadOnlyList<string> Resaved) : IDisposable
{
    public void Dispose() => CrossProcess.DeleteFolder(Path.GetDirectoryName(ModelPath)!);
}

/// <summary>
/// The cross-process proof harness: saves a model.zip in the test process, loads it with a plain
/// <c>mlContext.Model.Load</c> in a separate OS process (tests/RetriKT.MLNet.RoundTrip), predicts through
/// <c>Transform</c> and <c>PredictionEngine</c>, re-saves and reloads there, and asserts every output equals the test
/// process's own outputs exactly.
/// </summary>
public static class CrossProcess
{
    public static RoundTripResult RoundTrip(MLContext mlContext, ITransformer model, IDataView input, string? engineContract = null,
        TimeSpan? timeout = null)
    {
        var dir = Directory.CreateTempSubdirectory("retrikt-roundtrip-").FullName;
        try { return RoundTripIn(dir, mlContext, model, input, engineContract, timeout); }
        catch { DeleteFolder(dir); throw; }
    }

    internal static void DeleteFolder(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (IOException) { } // best effort: a leftover temp folder must not fail the test that made it
    }

    private static RoundTripResult RoundTripIn(string dir, MLContext mlContext, ITransformer model, IDataView input, string? engineContract, TimeSpan? timeout)
    {
        var modelPath = Path.Combine(dir, "model.zip");
        var inputPath = Path.Combine(dir, "input.idv");
        mlContext.Model.Save(model, input.Schema, modelPath);
        using (var stream = File.Create(inputPath))
            mlContext.Data.SaveAsBinary(input, stream, keepHidden: false);

        var expectedTransform = DataViewDump.Rows(model.Transform(input));
        var expectedEngine = engineContract is null ? null : EngineContracts.Predict(engineContract, mlContext, model, input);

        var outDir = Path.Combine(dir, "child");
        var childDll = Path.Combine(AppContext.BaseDirectory, "RetriKT.MLNet.RoundTrip.dll");
        Assert.True(File.Exists(childDll), $"child process assembly not deployed next to the tests: {childDll}");
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { childDll, modelPath, inputPath, outDir }) start.ArgumentList.Add(a);
        if (engineContract is not null) start.ArgumentList.Add(engineContract);
        using var child = Process.Start(start) ?? throw new InvalidOperationException("could not start the child process");
        var stderr = child.StandardError.ReadToEndAsync();
        var stdout = child.StandardOutput.ReadToEndAsync();
        if (!child.WaitForExit(timeout ?? TimeSpan.FromMinutes(5)))
        {
            child.Kill(entireProcessTree: true);
            Assert.Fail("child process timed out");
        }
        Assert.True(child.ExitCode == 0, $"child process failed (exit {child.ExitCode}):\n{stderr.Result}\n{stdout.Result}");

        var result = new RoundTripResult(modelPath,
            File.ReadAllLines(Path.Combine(outDir, "types.txt")),
            File.ReadAllLines(Path.Combine(outDir, "transform.txt")),
            engineContract is null ? null : File.ReadAllLines(Path.Combine(outDir, "engine.txt")),
            File.ReadAllLines(Path.Combine(outDir, "resaved.txt")));

        AssertSameLines(expectedTransform, result.Transform, "Transform in the child process");
        if (expectedEngine is not null) AssertSameLines(expectedEngine, result.Engine!, "PredictionEngine in the child process");
        AssertSameLines(expectedTransform, result.Resaved, "Transform after re-save and reload in the child process");
        return result;
    }

    private static void AssertSameLines(IReadOnlyList<string> expected, IReadOnlyList<string> actual, string what)
    {
        Assert.True(expected.Count == actual.Count, $"{what}: {actual.Count} lines, expected {expected.Count}.");
        for (int i = 0; i < expected.Count; i++)
            Assert.True(expected[i] == actual[i], $"{what}: line {i} differs.\nexpected: {expected[i]}\nactual:   {actual[i]}");
    }
}
