using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>A model file replaced while the loader is still loading the first one.</summary>
public class FileReplacedDuringStartTests
{
    [SharedDataFact]
    public async Task AFileRenamedIntoPlaceWhileTheFirstModelLoads_IsPickedUp()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "replaced-at-start");
        var answers2 = TestModels.SequentialAnswers(v2);
        var ml = new MLContext(0);
        var slowV1 = dir.File("slow-v1.zip");
        var tag = $"slow-load-{Guid.NewGuid():N}";
        ml.Model.Save(new TransformerChain<ITransformer>(ml.Model.Load(v1, out var schema), new SlowModelTransformer(tag, loadDelayMs: 2500, engineDelayMs: 0)), schema, slowV1);
        var modelPath = dir.File("model.zip");
        File.Copy(slowV1, modelPath);

        using var host = new PoolHost(b => b.FromFile(modelPath));
        var creating = Task.Run(() => host.Pool);
        Assert.True(SlowModelTransformer.LoadStarted(tag).Wait(TimeSpan.FromSeconds(15)), "the model did not start loading");
        TestModels.DeployByRename(v2, modelPath);   // a deployment lands while the first model (a big one) loads
        var pool = await creating;

        var text = TestModels.Sentences[0];
        Assert.True(Wait.Until(() =>
        {
            var p = pool.Predict(new TextInput { Text = text });
            return answers2[text].Matches(p.PredictedLabel, p.Score);
        }, TimeSpan.FromSeconds(5)), $"model.zip holds v2, but the pool still serves the file it started loading (generation {pool.GetModelGeneration()}, health: '{pool.GetLastLoadError() ?? "healthy"}')");
    }
}
