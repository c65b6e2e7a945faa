using System.Collections.Concurrent;
using System.Net;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Hosting.Tests;

public class HotReloadTests
{
    private static readonly TimeSpan SwapTimeout = TimeSpan.FromSeconds(15);

    [SharedDataFact]
    public async Task UnderLoad_AtomicRenameThenInPlaceCopy_ZeroFailures_NewAnswers_EachOldModelDisposedOnce()
    {
        using var dir = new TempDir();
        const string tag = "hot-reload";
        var (v1, v2) = TestModels.Save(dir.Path, tag);
        var answersV1 = TestModels.SequentialAnswers(v1);
        var answersV2 = TestModels.SequentialAnswers(v2);
        var sentences = TestModels.Sentences;
        Assert.Contains(sentences, s => !answersV1[s].Matches(answersV2[s].Label, answersV2[s].Scores));   // the swap is visible
        var modelPath = dir.File("model.zip");
        File.Copy(v1, modelPath);
        var probesBefore = DisposalProbeTransformer.WithTag($"{tag}-v1").Count;   // instances made by TestModels.Save / SequentialAnswers

        await using var server = await WebApiServer.StartAsync(modelPath);
        var failures = new ConcurrentQueue<string>();
        var answered = 0;
        // The load runs until the swaps below are done (every wait there is bounded, and the finally stops it). It used
        // to stop by itself after 60 s or 5,000 requests per client, whichever came first; either could end it before
        // the "answered > ... + 200" waits: 60 s on a loaded machine, 80,000 requests in ~10 s on a fast one (SERVING.md
        // measures ~7,900 requests/s at 32 clients).
        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, 16).Select(c => Task.Run(async () =>
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                var text = sentences[(c * 5 + i) % sentences.Count];
                try
                {
                    var answer = await server.Client.PredictAsync(text);
                    if (answer.Status != HttpStatusCode.OK || !(answer.Is(answersV1[text]) || answer.Is(answersV2[text])))
                        failures.Enqueue($"'{text}': {answer.Status} {answer.Body}");
                    Interlocked.Increment(ref answered);
                }
                catch (Exception ex)
                {
                    failures.Enqueue($"'{text}': {ex.GetType().Name} {ex.Message}");
                }
            }
        })).ToArray();

        try
        {
            Assert.True(Wait.Until(() => Volatile.Read(ref answered) > 200, SwapTimeout), "load did not start");

            // 1. Atomic deployment: one Renamed event.
            TestModels.DeployByRename(v2, modelPath);
            Assert.True(Wait.Until(() => server.Pool.GetModelGeneration() == 2, SwapTimeout), "the renamed-in model was not loaded");
            var afterRename = Volatile.Read(ref answered);
            Assert.True(Wait.Until(() => Volatile.Read(ref answered) > afterRename + 200, SwapTimeout));
            foreach (var s in sentences) Assert.True((await server.Client.PredictAsync(s)).Is(answersV2[s]), $"after the rename, '{s}' is not answered by v2");

            // 2. In-place copy over the file: several Changed events, one reload.
            File.Copy(v1, modelPath, overwrite: true);
            Assert.True(Wait.Until(() => server.Pool.GetModelGeneration() == 3, SwapTimeout), "the copied-in model was not loaded");
            var afterCopy = Volatile.Read(ref answered);
            Assert.True(Wait.Until(() => Volatile.Read(ref answered) > afterCopy + 200, SwapTimeout));
            foreach (var s in sentences) Assert.True((await server.Client.PredictAsync(s)).Is(answersV1[s]), $"after the copy, '{s}' is not answered by v1");
        }
        finally
        {
            stop.Cancel();
            await Task.WhenAll(load);
        }

        Assert.True(failures.IsEmpty, $"{failures.Count} failed requests of {answered}, e.g. {failures.FirstOrDefault()}");
        Assert.False(Wait.Until(() => server.Pool.GetModelGeneration() > 3, TimeSpan.FromMilliseconds(600)), "the copy reloaded twice");

        // Loaded models: v1 (start), v2 (rename), v1 again (copy). The first two are retired and disposed exactly once.
        var v1Loads = DisposalProbeTransformer.WithTag($"{tag}-v1").Skip(probesBefore).ToList();
        var v2Loads = DisposalProbeTransformer.WithTag($"{tag}-v2").Skip(1 + 1).ToList();   // Save + SequentialAnswers
        Assert.Equal(2, v1Loads.Count);
        Assert.Single(v2Loads);
        Assert.True(Wait.Until(() => v1Loads[0].DisposeCount == 1 && v2Loads[0].DisposeCount == 1, SwapTimeout),
            $"retired models disposed {v1Loads[0].DisposeCount} and {v2Loads[0].DisposeCount} times");
        Assert.Equal(0, v1Loads[1].DisposeCount);   // still serving

        await server.DisposeAsync();
        Assert.Equal(1, v1Loads[1].DisposeCount);   // disposed with the pool
        Assert.Equal(1, v1Loads[0].DisposeCount);
        Assert.Equal(1, v2Loads[0].DisposeCount);
    }

    [SharedDataFact]
    public async Task CorruptModelDroppedInPlace_OldModelKeepsServing_AndAnErrorIsLogged()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "corrupt");
        var answers = TestModels.SequentialAnswers(v1);
        var modelPath = dir.File("model.zip");
        File.Copy(v1, modelPath);
        await using var server = await WebApiServer.StartAsync(modelPath);

        // Truncated zip: the first half of a real model (a deployment that died mid-copy).
        var bytes = await File.ReadAllBytesAsync(v1);
        await File.WriteAllBytesAsync(modelPath, bytes.AsSpan(0, bytes.Length / 2).ToArray());
        Assert.True(Wait.Until(() => server.Logs.Has(Microsoft.Extensions.Logging.LogLevel.Error, "could not be loaded"), SwapTimeout),
            "no error was logged for the corrupt model");

        // A valid zip that does not fit the API's contract is rejected the same way.
        TestModels.DeployByRename(TestModels.SaveWrongSchemaModel(dir.Path), modelPath);
        Assert.True(Wait.Until(() => server.Logs.Has(Microsoft.Extensions.Logging.LogLevel.Error, "does not fit"), SwapTimeout),
            "no error was logged for the model with the wrong schema");

        Assert.Equal(1, server.Pool.GetModelGeneration());
        foreach (var s in TestModels.Sentences) Assert.True((await server.Client.PredictAsync(s)).Is(answers[s]), $"'{s}' is no longer answered by the old model");
        using var health = await server.Client.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
    }
}
