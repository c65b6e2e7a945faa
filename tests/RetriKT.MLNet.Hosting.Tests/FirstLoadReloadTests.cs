using Microsoft.Extensions.Logging;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>A reload that lands while the pool is still creating a model's first generation.</summary>
public class FirstLoadReloadTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    /// <summary>
    /// A new model deployed while the pool is still creating the first generation (a big model: its first engine
    /// takes a while) is loaded by the loader, which fires its reload token before the pool subscribed to it.
    /// </summary>
    [SharedDataFact]
    public async Task AReloadDuringTheFirstLoad_IsNotLost()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "firstload");
        var answers2 = TestModels.SequentialAnswers(v2);
        var ml = new MLContext(0);
        var slowV1 = dir.File("slow-v1.zip");
        var m1 = ml.Model.Load(v1, out var schema);
        ml.Model.Save(new TransformerChain<ITransformer>(m1, new SlowModelTransformer("slow-engine", loadDelayMs: 0, engineDelayMs: 2500)), schema, slowV1);
        var modelPath = dir.File("model.zip");
        File.Copy(slowV1, modelPath);

        using var host = new PoolHost(b => b.FromFile(modelPath));
        var creating = Task.Run(() => host.Pool);
        Assert.True(Wait.Until(() => host.Logs.Has(LogLevel.Information, "Loaded model file"), Timeout));
        Thread.Sleep(500);   // the loader starts watching just after that line; the pool is creating its first engine (2.5 s)
        Assert.False(creating.IsCompleted);
        TestModels.DeployByRename(v2, modelPath);
        Assert.True(Wait.Until(() => host.Logs.Has(LogLevel.Information, "Reloaded model file"), Timeout), "the loader did not reload");
        var pool = await creating;
        var text = TestModels.Sentences[0];
        Assert.True(Wait.Until(() => pool.GetModelGeneration() == 2, TimeSpan.FromSeconds(5)),
            $"the loader serves v2 but the pool is at generation {pool.GetModelGeneration()}; health says '{pool.GetLastLoadError() ?? "healthy"}'");
        var p = pool.Predict(new TextInput { Text = text });
        Assert.True(answers2[text].Matches(p.PredictedLabel, p.Score));
    }
}
