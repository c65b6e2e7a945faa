using System.Diagnostics;
using System.Runtime.CompilerServices;
using Xunit.Abstractions;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>Runs alone (no other test in parallel): a working-set bound means nothing while another test allocates.</summary>
[CollectionDefinition(nameof(MemorySoakTests), DisableParallelization = true)]
public sealed class MemorySoakCollection;

[Collection(nameof(MemorySoakTests))]
public class MemorySoakTests(ITestOutputHelper output)
{
    [SharedDataFact]
    public void Soak_TensOfThousandsOfPredictionsAcrossReloads_KeepsMemoryFlat_AndRetiredModelsAreCollected()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "soak");
        var modelPath = dir.File("model.zip");
        File.Copy(v1, modelPath);
        using var host = new PoolHost(b => b.FromFile(modelPath));
        var pool = host.Pool;
        var sentences = TestModels.Sentences;
        var clock = Stopwatch.StartNew();

        void Predict(int count) => Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            var p = pool.Predict(new TextInput { Text = sentences[i % sentences.Count] });
            if (p.Score.Length != 2) throw new InvalidOperationException("unexpected score width");
        });

        Predict(3_000);   // warm-up: engines, JIT, pools
        var firstModel = WeakRefTo(pool);
        var (managedBefore, workingSetBefore) = Measure();

        // 30,000 predictions and 6 hot reloads, always all of them: the loop used to stop at 60 s and then fail the
        // generation count below on a slow machine (measured here, 2 cores: 10 s beside 2 busy loops, 25 s beside 8).
        // Every round is bounded anyway (5,000 predictions, a reload waited for at most 15 s).
        const int rounds = 6, perRound = 5_000;
        for (var round = 0; round < rounds; round++)
        {
            Predict(perRound);
            TestModels.DeployByRename(round % 2 == 0 ? v2 : v1, modelPath);
            Assert.True(Wait.Until(() => pool.GetModelGeneration() == round + 2, TimeSpan.FromSeconds(15)), $"reload {round + 1} did not happen");
        }
        Predict(perRound);
        var (managedAfter, workingSetAfter) = Measure();

        output.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s; managed {managedBefore >> 10} -> {managedAfter >> 10} KiB; working set {workingSetBefore >> 20} -> {workingSetAfter >> 20} MiB");
        Assert.Equal(rounds + 1, pool.GetModelGeneration());
        Assert.False(firstModel.IsAlive, "the first model is still referenced after six reloads (a generation leak)");
        var managedGrowth = managedAfter - managedBefore;
        var workingSetGrowth = workingSetAfter - workingSetBefore;
        Assert.True(managedGrowth < 8L << 20, $"managed heap grew by {managedGrowth >> 10} KiB");
        Assert.True(workingSetGrowth < 64L << 20, $"working set grew by {workingSetGrowth >> 20} MiB");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference WeakRefTo(PredictionEnginePool<TextInput, TextPrediction> pool) => new(pool.GetModel());

    private static (long Managed, long WorkingSet) Measure()
    {
        for (var i = 0; i < 3; i++)
        {
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }
        using var self = Process.GetCurrentProcess();
        return (GC.GetTotalMemory(forceFullCollection: true), self.WorkingSet64);
    }
}
