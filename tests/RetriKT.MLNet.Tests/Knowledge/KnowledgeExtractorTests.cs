using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.SoftPrompt;
using TorchSharp;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>Knowledge extraction with the real stories260K teacher and soft prompts tuned on it.</summary>
public class KnowledgeExtractorTests
{
    private static KnowledgeExtractorOptions Options(SoftPromptTransformer prompts, string? checkpoint = null, CancellationToken token = default,
        IProgress<TrainingProgress>? progress = null) => new()
    {
        SoftPrompts = prompts, SamplesPerLabel = 6, BatchSize = 6, MaxAttemptsFactor = 4, FidelityThreshold = 0.0, RequireArgmax = false,
        MinWords = 3, CheckpointPath = checkpoint, CancellationToken = token, Progress = progress, Seed = 9,
    };

    /// <summary>Soft prompts tuned (supervised only) on the stories260K teacher for the story-mood task.</summary>
    private static SoftPromptTransformer StoryPrompts(MLContext mlContext, IDataView data, int supervisedEpochs)
        => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = SoftPromptPpoTrainerTests.StoryMood,
            SupervisedEpochs = supervisedEpochs, PpoSteps = 0, PromptTokens = 4,
        }).Fit(data);

    [SharedDataFact]
    public void ExtractionIsBalancedDeduplicatedRepeatableResumableAndRoundTrips()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = StoryPrompts(mlContext, data, supervisedEpochs: 4);

        var estimator = mlContext.RetriKT().KnowledgeExtractor(Options(prompts));
        var first = estimator.Fit(data);
        var store = first.Store;
        // The estimator's shape promises what Transform gives: SoftLabel, a vector of Single with the labels as SlotNames.
        var promised = Assert.Single(estimator.GetOutputSchema(SchemaShapes.Of(data.Schema)), c => c.Name == "SoftLabel");
        var given = Assert.Single(SchemaShapes.Of(first.GetOutputSchema(data.Schema)), c => c.Name == "SoftLabel");
        Assert.Equal((given.Kind, given.ItemType, given.IsKey), (promised.Kind, promised.ItemType, promised.IsKey));
        Assert.Equal(given.Annotations.Select(a => (a.Name, a.Kind, a.ItemType)), promised.Annotations.Select(a => (a.Name, a.Kind, a.ItemType)));
        var report = first.Report!;
        Assert.Equal(8, report.FewShot);
        Assert.Equal(6, report.Kept["happy"]);
        Assert.Equal(6, report.Kept["sad"]);
        Assert.Equal(8 + 12, store.Count);
        Assert.All(store.Entries.Where(e => e.Source == KnowledgeSource.Generated), e => Assert.Equal(1f, e.SoftLabel.Sum(), 3));
        var normalised = store.Entries.Select(e => DuplicateFilter.Normalise(e.Text!)).ToList();
        Assert.Equal(normalised.Count, normalised.Distinct().Count());

        // Same seed, same store.
        var second = mlContext.RetriKT().KnowledgeExtractor(Options(prompts)).Fit(data);
        Assert.Equal(store.Entries.Select(e => e.Text), second.Store.Entries.Select(e => e.Text));
        Assert.Equal(store.SoftLabels.ToArray(), second.Store.SoftLabels.ToArray());

        // Interrupted after the first batch, then resumed from the checkpoint: nothing generated is lost, same result.
        using var folder = new TempDir("retrikt-extract-");
        var checkpoint = folder.File("extraction.jsonl");
        using (var cts = new CancellationTokenSource())
        {
            int batches = 0;
            var progress = new SyncProgress(p => { if (p.Stage == "Extraction" && ++batches == 1) cts.Cancel(); });
            Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, cts.Token, progress)).Fit(data));
        }
        Assert.True(File.ReadLines(checkpoint).Count(l => l.Contains("\"done\":true")) >= 1);
        var resumed = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint)).Fit(data);
        Assert.True(resumed.Report!.ResumedBatches >= 1, $"resumed {resumed.Report.ResumedBatches} batches");
        Assert.Equal(store.Entries.Select(e => e.Text), resumed.Store.Entries.Select(e => e.Text));

        // ML.NET face: the store as an IDataView, and the transformer across processes.
        var view = first.ToDataView(mlContext);
        Assert.Equal(new[] { "Text", "Text2", "Label", "SoftLabel", "Fidelity", "Source" }, view.Schema.Select(c => c.Name));
        Assert.Equal(store.Count, view.GetRowCount() ?? mlContext.Data.CreateEnumerable<KnowledgeRow>(view, false).Count());
        using (CrossProcess.RoundTrip(mlContext, first, data)) { }
    }

    /// <summary>
    /// An extractor that fits its own prompts (SoftPromptOptions) ran prompt tuning, its longest stage, without its
    /// Progress (no report) or CancellationToken (a cancel was seen only once extraction began), and a failed or
    /// cancelled extraction left those prompts and their teacher alive.
    /// </summary>
    [SharedDataFact]
    public void AnExtractorThatFitsItsPromptsPassesItsRunControlOnAndReleasesThemWhenCancelled()
    {
        var mlContext = new MLContext(seed: 3);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        KnowledgeExtractorOptions Fitting(IProgress<TrainingProgress> progress, CancellationToken token) => new()
        {
            SoftPromptOptions = new SoftPromptPpoOptions { TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = SoftPromptPpoTrainerTests.StoryMood,
                SupervisedEpochs = 3, PromptTokens = 2, PpoSteps = 2, RolloutsPerStep = 4, MiniBatchSize = 4, PpoEpochs = 1, MaxNewTokens = 6 },
            SamplesPerLabel = 8, BatchSize = 4, Progress = progress, CancellationToken = token,
        };
        var stages = new List<string>();
        using (var cancellation = new CancellationTokenSource())
        {
            var cancelInStage1 = new SyncProgress(p => { stages.Add(p.Stage); if (p.Stage == "Stage 1") cancellation.Cancel(); });
            var options = Fitting(cancelInStage1, cancellation.Token);
            Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().KnowledgeExtractor(options).Fit(data));
            Assert.Equal(["Stage 1"], stages);
            Assert.Null(options.SoftPromptOptions!.Progress); // the options given stay as they were
        }

        long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        void CancelledInExtraction()
        {
            using var cancellation = new CancellationTokenSource();
            var cancelInExtraction = new SyncProgress(p => { if (p.Stage == "Extraction") cancellation.Cancel(); });
            Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().KnowledgeExtractor(Fitting(cancelInExtraction, cancellation.Token)).Fit(data));
        }
        CancelledInExtraction(); // warms the caches up
        long before = Live();
        CancelledInExtraction();
        Assert.Equal(0, Live() - before);
    }

    [SharedDataFact]
    public void AssigningTheTeachersLabelKeepsEverySampleUnderItsArgmaxAndNeedsNoMoreGeneration()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = StoryPrompts(mlContext, data, supervisedEpochs: 2);
        KnowledgeExtractorOptions Strict(bool assign)
        {
            var o = Options(prompts);
            o.FidelityThreshold = 0.5; o.RequireArgmax = true; o.AssignToTeacherLabel = assign; o.MaxAttemptsFactor = 8;
            return o;
        }

        var intended = mlContext.RetriKT().KnowledgeExtractor(Strict(assign: false)).Fit(data);
        var assigned = mlContext.RetriKT().KnowledgeExtractor(Strict(assign: true)).Fit(data);

        var generated = assigned.Store.Entries.Where(e => e.Source == KnowledgeSource.Generated).ToList();
        Assert.NotEmpty(generated);
        Assert.All(generated, e => Assert.Equal(Array.IndexOf(e.SoftLabel, e.SoftLabel.Max()), e.Label));
        Assert.All(generated, e => Assert.Equal(e.SoftLabel[e.Label], e.Fidelity));
        // Filing by the teacher's label never keeps fewer.
        foreach (var label in new[] { "happy", "sad" })
            Assert.True(assigned.Report!.Kept[label] >= intended.Report!.Kept[label], $"{label}: assigned {assigned.Report}; intended {intended.Report}");
        Assert.Equal(generated.Count, assigned.Report!.Kept.Values.Sum());
        Assert.True(assigned.Report.Generated.Values.Sum() <= intended.Report!.Generated.Values.Sum(),
            $"assigned generated {assigned.Report.Generated.Values.Sum()}, intended {intended.Report.Generated.Values.Sum()}");
    }

    [SharedDataFact]
    public void SamplesCutOffAtTheTokenLimitAreKeptByDefaultAndDroppedWhenAsked()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = StoryPrompts(mlContext, data, supervisedEpochs: 2);
        using var folder = new TempDir("retrikt-unfinished-");
        var checkpoint = folder.File("extraction.jsonl");

        var keep = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint)).Fit(data);
        var o = Options(prompts, checkpoint);
        o.DropUnfinished = true;
        var drop = mlContext.RetriKT().KnowledgeExtractor(o).Fit(data);

        // What the teacher wrote up to its 24-token limit without ending the story, from the run's own checkpoint.
        var cutOff = File.ReadLines(checkpoint).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!)
            .Where(n => n["finished"]?.GetValue<bool>() == false).Select(n => n["text"]!.GetValue<string>()).ToHashSet();
        Assert.NotEmpty(cutOff);
        static List<string> Generated(KnowledgeExtractorTransformer t) => t.Store.Entries.Where(e => e.Source == KnowledgeSource.Generated).Select(e => e.Text!).ToList();
        Assert.Contains(Generated(keep), cutOff.Contains);
        Assert.Equal(0, keep.Report!.Dropped[DropReason.Unfinished]);
        Assert.DoesNotContain(Generated(drop), cutOff.Contains);
        Assert.True(drop.Report!.Dropped[DropReason.Unfinished] > 0, drop.Report.ToString());
    }

    /// <summary>
    /// The stage's total is the most batches it may need (SamplesPerLabel × MaxAttemptsFactor per label); an extraction
    /// that met every quota sooner ended with its last report at, say, 2 of 8 (a progress bar stuck at 25 %, and no log
    /// line for the stage's end). Its last report now says the stage is done.
    /// </summary>
    /// <summary>
    /// The cap of SamplesPerLabel × MaxAttemptsFactor was taken in floating point: 100 × 1.1 is 110.00000000000001, so
    /// with batches of 110 the cap came to two batches (220 samples per label) instead of one (110). The product is a
    /// whole number of samples now, and batches are counted from it.
    /// </summary>
    [SharedDataFact]
    public void TheAttemptsCapIsTheProductOfTheSettingsNotItsFloatingPointError()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = StoryPrompts(mlContext, data, supervisedEpochs: 1);
        var options = Options(prompts);
        (options.SamplesPerLabel, options.MaxAttemptsFactor, options.BatchSize, options.FidelityThreshold, options.FluencyFilter) = (100, 1.1, 110, 1.0, false);
        var report = mlContext.RetriKT().KnowledgeExtractor(options).Fit(data).Report!;
        Assert.Equal(0, report.Kept.Values.Sum()); // nothing passes a fidelity threshold of 1, so every label generates up to its cap
        Assert.All(report.Generated.Values, generated => Assert.Equal(110, generated));
    }

    [SharedDataFact]
    public void AnExtractionThatMeetsItsQuotasEarlyEndsItsProgressDone()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = StoryPrompts(mlContext, data, supervisedEpochs: 2);
        var reports = new List<TrainingProgress>();
        var extracted = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, progress: new SyncProgress(p => { if (p.Stage == "Extraction") reports.Add(p); }))).Fit(data);
        Assert.Equal(6, extracted.Report!.Kept["happy"]);
        Assert.True(reports[0].TotalSteps > reports.Count, $"{reports.Count} reports of {reports[0].TotalSteps} planned batches: the quotas were met early");
        Assert.Equal(1, reports[^1].Fraction);
    }

    /// <summary>
    /// An extraction's Dispose released the soft prompts' teacher even when the caller gave the prompts (SoftPrompts):
    /// after <c>using var extraction = …</c>, the next extraction with the same prompts failed with a bare "Cannot access a
    /// disposed object.". It releases only prompts it fitted itself (SoftPromptOptions) or loaded from model.zip.
    /// </summary>
    [SharedDataFact]
    public void DisposingAnExtractionLeavesTheSoftPromptsItWasGivenToTheCaller()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = StoryPrompts(mlContext, data, supervisedEpochs: 1);
        KnowledgeStore first;
        using (var extraction = mlContext.RetriKT().KnowledgeExtractor(Options(prompts)).Fit(data)) first = extraction.Store;
        using var again = mlContext.RetriKT().KnowledgeExtractor(Options(prompts)).Fit(data);
        Assert.Equal(first.Entries, again.Store.Entries);
    }

    private sealed class SoftLabelRow
    {
        public string Text { get; set; } = "";
        public float[] SoftLabel { get; set; } = [];
    }

    /// <summary>
    /// Transform promises the labelling the store's entries got, but it always calibrated the verbalizer: after an
    /// extraction with <see cref="KnowledgeExtractorOptions.CalibrateVerbalizer"/> off it gave the store's own texts other
    /// soft labels (0.30 / 0.70 in the store, 0.64 / 0.36 from Transform: another label), also once loaded from model.zip.
    /// </summary>
    [SharedDataFact]
    public void TransformLabelsTheStoresTextsAsTheStoreDoesWithCalibrationOff()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = StoryPrompts(mlContext, data, supervisedEpochs: 2);
        var o = Options(prompts);
        o.SamplesPerLabel = 3; o.BatchSize = 3; o.CalibrateVerbalizer = false;
        var extracted = mlContext.RetriKT().KnowledgeExtractor(o).Fit(data);
        var generated = extracted.Store.Entries.Where(e => e.Source == KnowledgeSource.Generated).ToList();
        Assert.NotEmpty(generated);
        var texts = mlContext.Data.LoadFromEnumerable(generated.Select(e => new RetriKT.MLNet.Pipeline.TextPairRow { Text = e.Text!, Label = "happy" }));

        void AssertStoresLabelling(ITransformer model)
        {
            var labelled = mlContext.Data.CreateEnumerable<SoftLabelRow>(model.Transform(texts), reuseRowObject: false).ToList();
            for (int i = 0; i < generated.Count; i++)
                for (int l = 0; l < 2; l++)
                    Assert.True(Math.Abs(generated[i].SoftLabel[l] - labelled[i].SoftLabel[l]) < 1e-5,
                        $"'{generated[i].Text}': store [{string.Join(", ", generated[i].SoftLabel)}], Transform [{string.Join(", ", labelled[i].SoftLabel)}]");
        }
        AssertStoresLabelling(extracted);
        using var zip = new MemoryStream();
        mlContext.Model.Save(extracted, data.Schema, zip);
        using var loaded = (KnowledgeExtractorTransformer)new MLContext().Model.Load(new MemoryStream(zip.ToArray()), out _);
        AssertStoresLabelling(loaded);
    }

    /// <summary>
    /// Transform scored rows under a lock of its own while Dispose released the loaded teacher without it, so a model
    /// dropped while another thread labelled rows freed the teacher under that thread's forward pass; and an extraction
    /// with the caller's prompts went on labelling after Dispose. Dispose now waits for the row in flight, and a disposed
    /// model's rows are refused naming it, whoever owns the prompts (the caller's stay usable).
    /// </summary>
    [SharedDataFact]
    public void DisposeWaitsForTheRowBeingLabelledAndADisposedModelLabelsNothing()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = StoryPrompts(mlContext, data, supervisedEpochs: 1);
        var o = Options(prompts);
        o.SamplesPerLabel = 2; o.BatchSize = 2;
        var extracted = mlContext.RetriKT().KnowledgeExtractor(o).Fit(data);
        string[] texts = ["the little dog ran to the park", "a sad bird lost its nest in the storm"];
        var rows = mlContext.Data.LoadFromEnumerable(Enumerable.Range(0, 20_000).Select(i => new RetriKT.MLNet.Pipeline.TextPairRow { Text = texts[i % 2], Label = "happy" }));
        var expected = mlContext.Data.CreateEnumerable<SoftLabelRow>(extracted.Transform(mlContext.Data.TakeRows(rows, 2)), reuseRowObject: false).Select(r => r.SoftLabel).ToList();
        using var zip = new MemoryStream();
        mlContext.Model.Save(extracted, data.Schema, zip);
        extracted.Dispose();
        Assert.Equal(typeof(KnowledgeExtractorTransformer).FullName, Assert.Throws<ObjectDisposedException>(
            () => mlContext.Data.CreateEnumerable<SoftLabelRow>(extracted.Transform(rows), reuseRowObject: false).First()).ObjectName);
        Assert.Equal(2, prompts.Generate(label: 0, count: 2, seed: 1).Count); // the caller's prompts were not released

        var loaded = (KnowledgeExtractorTransformer)new MLContext().Model.Load(new MemoryStream(zip.ToArray()), out _); // owns its teacher
        using var started = new ManualResetEventSlim();
        int labelled = 0;
        var inFlight = Task.Run(() =>
        {
            foreach (var row in mlContext.Data.CreateEnumerable<SoftLabelRow>(loaded.Transform(rows), reuseRowObject: false))
            {
                for (int l = 0; l < 2; l++)
                    Assert.True(Math.Abs(expected[labelled % 2][l] - row.SoftLabel[l]) < 1e-5, $"row {labelled}: [{string.Join(", ", row.SoftLabel)}], expected [{string.Join(", ", expected[labelled % 2])}]");
                labelled++;
                started.Set();
            }
        });
        Assert.True(started.Wait(TimeSpan.FromMinutes(1)), "no row was labelled");
        loaded.Dispose();
        Assert.Equal(typeof(KnowledgeExtractorTransformer).FullName, Assert.Throws<ObjectDisposedException>(() => inFlight.GetAwaiter().GetResult()).ObjectName);
        Assert.InRange(labelled, 1, 19_999);
    }

    [Fact]
    public void NearDuplicatesAreCaughtAndDistinctTextsPass()
    {
        var filter = new DuplicateFilter(0.8);
        Assert.Null(filter.Admit("the little dog ran to the park and played with a red ball all day"));
        Assert.Equal(DropReason.ExactDuplicate, filter.Admit("The little dog ran to the park, and played with a red ball all day!"));
        Assert.Equal(DropReason.NearDuplicate, filter.Admit("the little dog ran to the park and played with a red ball all day long"));
        Assert.Null(filter.Admit("a sad bird lost its nest in the storm and cried"));
    }
}
