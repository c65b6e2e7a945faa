using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.ML;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>The pool's contract without HTTP: named models, engine generations, returns, disposal, warm-up.</summary>
public class PoolSemanticsTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    [SharedDataFact]
    public void NamedModels_AnswerWithTheirOwnModel_LoadOnFirstUse_AndUnknownNamesThrow()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "named");
        var answers1 = TestModels.SequentialAnswers(v1);
        var answers2 = TestModels.SequentialAnswers(v2);
        var loadsBefore = DisposalProbeTransformer.WithTag("named-v1").Count;
        using var host = new PoolHost(b => b.FromFile("first", v1, watchForChanges: false).FromFile("second", v2));
        var pool = host.Pool;

        Assert.Equal(["first", "second"], pool.ConfiguredModelNames.Order());
        Assert.Equal(loadsBefore, DisposalProbeTransformer.WithTag("named-v1").Count);   // named models load lazily
        foreach (var s in TestModels.Sentences)
        {
            var p1 = pool.Predict("first", new TextInput { Text = s });
            var p2 = pool.Predict("second", new TextInput { Text = s });
            Assert.True(answers1[s].Matches(p1.PredictedLabel, p1.Score));
            Assert.True(answers2[s].Matches(p2.PredictedLabel, p2.Score));
        }
        Assert.Equal(loadsBefore + 1, DisposalProbeTransformer.WithTag("named-v1").Count);   // loaded once

        var noDefault = Assert.Throws<ArgumentException>(() => pool.GetPredictionEngine());
        Assert.Contains("default model", noDefault.Message);
        var unknown = Assert.Throws<ArgumentException>(() => pool.GetModel("third"));
        Assert.Contains("'third'", unknown.Message);
    }

    [SharedDataFact]
    public void EngineRentedBeforeAReload_KeepsItsModel_GoesBackToItsGeneration_AndTheOldModelIsDisposedOnReturn()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "generations");
        var answers1 = TestModels.SequentialAnswers(v1);
        var answers2 = TestModels.SequentialAnswers(v2);
        var modelPath = dir.File("model.zip");
        File.Copy(v1, modelPath);
        var v1Before = DisposalProbeTransformer.WithTag("generations-v1").Count;
        using var host = new PoolHost(b => b.FromFile(modelPath));
        var pool = host.Pool;
        var served = DisposalProbeTransformer.WithTag("generations-v1").Skip(v1Before).Single();
        var text = TestModels.Sentences[0];

        var oldEngine = pool.GetPredictionEngine();
        TestModels.DeployByRename(v2, modelPath);
        Assert.True(Wait.Until(() => pool.GetModelGeneration() == 2, Timeout), "the new model was not loaded");

        // The rented engine still predicts with (and keeps alive) the model it was created from.
        Assert.Equal(0, served.DisposeCount);
        var old = oldEngine.Predict(new TextInput { Text = text });
        Assert.True(answers1[text].Matches(old.PredictedLabel, old.Score));

        // New rentals come from the new generation; the old engine never leaks into it (the 5.0 fault).
        var fresh = Enumerable.Range(0, 8).Select(_ => pool.GetPredictionEngine()).ToList();
        Assert.DoesNotContain(oldEngine, fresh);
        foreach (var engine in fresh)
        {
            var p = engine.Predict(new TextInput { Text = text });
            Assert.True(answers2[text].Matches(p.PredictedLabel, p.Score));
        }
        pool.ReturnPredictionEngine(oldEngine);
        // Released when its last engine comes back, once retired: the loader retires it on its own thread just after
        // publishing generation 2, so under load the retire may come after this return.
        Assert.True(Wait.Until(() => served.DisposeCount == 1, Timeout), $"the retired model was disposed {served.DisposeCount} times");
        foreach (var engine in fresh) pool.ReturnPredictionEngine(engine);
        for (var i = 0; i < 16; i++)
        {
            var engine = pool.GetPredictionEngine();
            Assert.NotSame(oldEngine, engine);
            pool.ReturnPredictionEngine(engine);
        }
        Assert.Equal(1, served.DisposeCount);
    }

    [SharedDataFact]
    public void Returns_AreChecked_DoubleForeignAndWrongModel()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "returns");
        using var host = new PoolHost(b => b.FromFile(v1, watchForChanges: false).FromFile("other", v2, watchForChanges: false));
        var pool = host.Pool;

        var engine = pool.GetPredictionEngine();
        pool.ReturnPredictionEngine(engine);
        Assert.Throws<InvalidOperationException>(() => pool.ReturnPredictionEngine(engine));

        var ml = new MLContext(0);
        using var foreign = ml.Model.CreatePredictionEngine<TextInput, TextPrediction>(ml.Model.Load(v1, out _));
        Assert.Throws<ArgumentException>(() => pool.ReturnPredictionEngine(foreign));

        var named = pool.GetPredictionEngine("other");
        Assert.Throws<ArgumentException>(() => pool.ReturnPredictionEngine(string.Empty, named));
        pool.ReturnPredictionEngine("other", named);
    }

    [SharedDataFact]
    public void Dispose_StopsRentingAndWatching_AndDisposesTheModelAfterOutstandingEnginesReturn()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "dispose");
        var modelPath = dir.File("model.zip");
        File.Copy(v1, modelPath);
        var v1Before = DisposalProbeTransformer.WithTag("dispose-v1").Count;
        var v2Before = DisposalProbeTransformer.WithTag("dispose-v2").Count;
        var host = new PoolHost(b => b.FromFile(modelPath));
        var pool = host.Pool;
        var served = DisposalProbeTransformer.WithTag("dispose-v1").Skip(v1Before).Single();

        var outstanding = pool.GetPredictionEngine();
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.GetPredictionEngine());
        Assert.Equal(0, served.DisposeCount);
        pool.ReturnPredictionEngine(outstanding);
        Assert.Equal(1, served.DisposeCount);
        host.Dispose();   // the container disposes the pool again: still once
        Assert.Equal(1, served.DisposeCount);

        TestModels.DeployByRename(v2, modelPath);
        Assert.False(Wait.Until(() => DisposalProbeTransformer.WithTag("dispose-v2").Count > v2Before, TimeSpan.FromSeconds(1)),
            "a disposed pool still reloads");
    }

    [SharedDataFact]
    public async Task WarmUpOnStart_LoadsEveryNamedModelBeforeTheFirstRequest()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "warm");
        var v1Before = DisposalProbeTransformer.WithTag("warm-v1").Count;
        var v2Before = DisposalProbeTransformer.WithTag("warm-v2").Count;
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddPredictionEnginePool<TextInput, TextPrediction>()
            .FromFile("a", v1, watchForChanges: false)
            .FromFile("b", v2, watchForChanges: false)
            .WarmUpOnStart();
        using var host = builder.Build();
        Assert.Equal(v1Before, DisposalProbeTransformer.WithTag("warm-v1").Count);

        await host.StartAsync();
        Assert.Equal(v1Before + 1, DisposalProbeTransformer.WithTag("warm-v1").Count);
        Assert.Equal(v2Before + 1, DisposalProbeTransformer.WithTag("warm-v2").Count);
        await host.StopAsync();
    }

    /// <summary>
    /// A model plugged in with a custom loader, as the docs show (<c>PredictionEnginePoolOptions.ModelLoader</c>):
    /// WarmUp knew only the builder's names, so WarmUpOnStart left it cold (loaded by the first request) without a word.
    /// </summary>
    [SharedDataFact]
    public async Task WarmUpOnStart_LoadsAModelOfACustomLoader()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "warm-custom");
        var v1Before = DisposalProbeTransformer.WithTag("warm-custom-v1").Count;
        var v2Before = DisposalProbeTransformer.WithTag("warm-custom-v2").Count;
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddPredictionEnginePool<TextInput, TextPrediction>()
            .FromFile("file", v1, watchForChanges: false)
            .WarmUpOnStart();
        builder.Services.AddOptions<PredictionEnginePoolOptions<TextInput, TextPrediction>>("custom")
            .Configure<Microsoft.Extensions.Options.IOptions<MLOptions>>((o, ml) => o.ModelLoader = new ZipModelLoader(ml.Value.MLContext, v2));
        using var host = builder.Build();

        await host.StartAsync();
        Assert.Equal(v1Before + 1, DisposalProbeTransformer.WithTag("warm-custom-v1").Count);
        Assert.Equal(v2Before + 1, DisposalProbeTransformer.WithTag("warm-custom-v2").Count);
        var pool = host.Services.GetRequiredService<PredictionEnginePool<TextInput, TextPrediction>>();
        Assert.Equal(["custom", "file"], pool.ConfiguredModelNames.Order());
        await host.StopAsync();
    }

    /// <summary>A user's loader: one model.zip, loaded once, never reloaded.</summary>
    private sealed class ZipModelLoader(MLContext ml, string path) : ModelLoader
    {
        private readonly Lazy<ITransformer> _model = new(() => ml.Model.Load(path, out _));
        public override ITransformer GetModel() => _model.Value;
        public override Microsoft.Extensions.Primitives.IChangeToken GetReloadToken() => new ModelReloadToken();
    }

    /// <summary>
    /// A replacement the pool refuses (a valid model.zip that does not fit TData/TPrediction) was logged at Error with its
    /// exception attached: ML.NET's stack, many lines, and the reason only inside it. It is one line with the reason, as
    /// a damaged file is (the details at Debug).
    /// </summary>
    [SharedDataFact]
    public void AReplacementThatDoesNotFit_IsLoggedAsOneLineWithTheReason_AndTheOldModelKeepsServing()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "misfit");
        var answers = TestModels.SequentialAnswers(v1);
        var modelPath = dir.File("model.zip");
        File.Copy(v1, modelPath);
        using var host = new PoolHost(b => b.FromFile(modelPath));
        var pool = host.Pool;

        TestModels.DeployByRename(TestModels.SaveWrongSchemaModel(dir.Path), modelPath);
        Assert.True(Wait.Until(() => host.Logs.Entries.Any(e => e.Level >= Microsoft.Extensions.Logging.LogLevel.Error), Timeout), "the refused model was not logged");
        var error = Assert.Single(host.Logs.Entries, e => e.Level >= Microsoft.Extensions.Logging.LogLevel.Error);
        Assert.Null(error.Exception);
        Assert.DoesNotContain('\n', error.Message);
        Assert.Contains(pool.GetLastLoadError()!, error.Message);
        Assert.Equal(1, pool.GetModelGeneration());
        var s = TestModels.Sentences[0];
        var p = pool.Predict(new TextInput { Text = s });
        Assert.True(answers[s].Matches(p.PredictedLabel, p.Score));
    }

    /// <summary>
    /// A release folder swapped under a symlink (<c>ln -sfn releases/v2 current</c>, as release-folder deploys and
    /// Kubernetes' volume updates do) raises no event for the watched file: the pool served v1 for ever, healthy, while
    /// current/model.zip held v2. The file's size and time, checked every few seconds, catch it.
    /// </summary>
    [SharedDataFact]
    public void AReleaseFolderSwappedUnderASymlink_IsPickedUp()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "release");
        var answers2 = TestModels.SequentialAnswers(v2);
        foreach (var (release, model) in new[] { ("r1", v1), ("r2", v2) })
        {
            Directory.CreateDirectory(dir.File(release));
            File.Copy(model, Path.Combine(dir.File(release), "model.zip"));
        }
        Directory.CreateSymbolicLink(dir.File("current"), dir.File("r1"));
        using var host = new PoolHost(b => b.FromFile(Path.Combine(dir.File("current"), "model.zip")));
        var pool = host.Pool;

        // As a deploy script swaps releases atomically: a new link renamed over the old one (ln -s r2 current.new;
        // mv -T current.new current). .NET's File.Move will not rename onto a link to a folder.
        Directory.CreateSymbolicLink(dir.File("current.new"), dir.File("r2"));
        using (var mv = System.Diagnostics.Process.Start("mv", ["-T", dir.File("current.new"), dir.File("current")]))
        {
            mv.WaitForExit();
            Assert.Equal(0, mv.ExitCode);
        }
        Assert.Equal(new FileInfo(v2).Length, new FileInfo(Path.Combine(dir.File("current"), "model.zip")).Length);
        Assert.True(Wait.Until(() => pool.GetModelGeneration() == 2, Timeout), "current/model.zip holds v2, but the pool still serves v1");
        foreach (var s in TestModels.Sentences)
        {
            var p = pool.Predict(new TextInput { Text = s });
            Assert.True(answers2[s].Matches(p.PredictedLabel, p.Score));
        }
        Assert.Null(pool.GetLastLoadError());
    }

    [SharedDataFact]
    public void MissingModelFile_FailsWithThePath()
    {
        using var dir = new TempDir();
        var missing = dir.File("nope.zip");
        using var host = new PoolHost(b => b.FromFile(missing));
        var error = Assert.Throws<FileNotFoundException>(() => host.Pool);
        Assert.Contains(missing, error.Message);
    }

    [SharedDataFact]
    public void AModelWithoutAPredictionColumn_OrWithADamagedPart_IsRefusedAtLoad()
    {
        using var dir = new TempDir();
        // ML.NET alone would serve it, answering every request with the input text as the label and no scores.
        var noScore = TestModels.SaveModelWithoutScore(dir.Path);
        using (var host = new PoolHost(b => b.FromFile(noScore)))
        {
            var error = Assert.Throws<InvalidOperationException>(() => host.Pool.GetPredictionEngine());
            Assert.True(error.Message.Equals("The model has no output column 'Score' for TextPrediction.Score; its columns are Text, Text2, PredictedLabel.", StringComparison.Ordinal), error.Message);
        }

        // One byte changed in a part: ML.NET alone loads it as another model.
        var (v1, _) = TestModels.Save(dir.Path, "damaged");
        var damaged = dir.File("damaged.zip");
        File.WriteAllBytes(damaged, TestModels.Damaged(File.ReadAllBytes(v1)));
        using (var host = new PoolHost(b => b.FromFile(damaged)))
        {
            var error = Assert.ThrowsAny<Exception>(() => host.Pool.GetPredictionEngine());
            Assert.Matches($"^Model file '{System.Text.RegularExpressions.Regex.Escape(damaged)}' \\(\\d+ bytes\\) is not a loadable ML.NET model: part '.+' is damaged or was modified: .+ bytes with CRC-32 [0-9a-f]{{8}}, expected .+$", error.Message);
        }
    }
}
