using Microsoft.ML;
using RetriKT.MLNet.Common;
using RetriKT.Samples.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>The whole RetriKT chain on the embedded café-review task with a teacher pretrained in the test.</summary>
public sealed class RetriKTPipelineTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-pipeline-");
    private string Temp => _folder.Path;

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void RunsEveryStageOnTheEmbeddedTaskAndReturnsACompleteResult()
    {
        // A tiny LLaMA pretrained for a few steps on the task's unlabeled pool: enough to generate and score text.
        var pool = EmbeddedCafeReviews.UnlabeledPool(600);
        var tokenizer = ByteLevelBpeTrainer.Train(pool.Take(300), 400, Path.Combine(Temp, "tokenizer"));
        var config = new TeacherConfig
        {
            ModelType = "llama", VocabSize = tokenizer.VocabSize, HiddenSize = 48, IntermediateSize = 96, NumLayers = 2, NumHeads = 4,
            NumKeyValueHeads = 4, HeadDim = 12, MaxPositions = 128, BosTokenId = tokenizer.BosId, EosTokenIds = [tokenizer.EosId!.Value],
        };
        var teacherPath = Path.Combine(Temp, "teacher");
        using var teacher = TeacherModel.Create(config, tokenizer, seed: 3);
        new TeacherPretrainer(new MLContext(seed: 1), new TeacherPretrainerOptions { Steps = 40, BatchSize = 8, SequenceLength = 48, LearningRate = 3e-3, WarmupSteps = 4 })
            .Train(teacher, pool);
        teacher.SaveCheckpoint(teacherPath);
        teacher.RequiresGrad = false;

        var task = EmbeddedCafeReviews.Task(testPerLabel: 10);
        var stages = new HashSet<string>();
        var pipeline = new RetriKTPipeline(new MLContext(seed: 1), teacher, teacherPath, new RetriKTPipelineOptions
        {
            PromptTokens = 2, SupervisedEpochs = 1, PpoSteps = 1, RolloutsPerStep = 4, SamplesPerLabel = 4, MaxAttemptsFactor = 2,
            FidelityThreshold = 0, RequireArgmax = false, MaxNewTokens = 12, StudentEpochs = 3, StudentHiddenSize = 32, StudentMaxLength = 48,
            WorkDirectory = Path.Combine(Temp, "work"),
        });
        var result = pipeline.Run(task, new SyncProgress(p => stages.Add(p.Stage)));

        Assert.Equal("CafeReviews", result.Task);
        Assert.InRange(result.Test.Accuracy, 0, 1);
        Assert.InRange(result.Test.MacroF1, 0, 1);
        Assert.NotNull(result.Test.PositiveF1);
        Assert.InRange(result.Test.PositiveF1!.Value, 0, 1);
        Assert.Equal(20, result.Test.Rows);
        Assert.InRange(result.FewShotDevAccuracy, 0, 1);
        Assert.Equal(teacher.ParameterCount, result.TeacherParameters);
        Assert.True(result.StudentParameters > 0);
        Assert.Equal(2 * 2 * 48, result.PromptParameters); // 2 labels × 2 virtual tokens × hidden 48
        Assert.Equal((double)result.StudentParameters / teacher.ParameterCount, result.ParameterRatio);
        Assert.Equal(32, result.Extraction.FewShot);
        Assert.Equal(result.Extraction.FewShot + result.Extraction.Kept.Values.Sum(), result.StoreSize);
        Assert.InRange(result.RetrievalWeight, 0, 1);
        Assert.NotNull(result.SoftPromptReport);
        Assert.True(result.Timings.Total > TimeSpan.Zero && result.Timings.SoftPrompts > TimeSpan.Zero && result.Timings.Student > TimeSpan.Zero);
        // The one checkpoint is the file ExtractionCheckpointPath names (what the Quickstart tells a cancelled run it kept).
        Assert.Equal(pipeline.ExtractionCheckpointPath(task), Assert.Single(Directory.GetFiles(Path.Combine(Temp, "work"), "extraction-*.jsonl")));
        Assert.Contains("Extraction", stages);

        // The reference rows are scored the same way.
        var majority = RetriKTPipeline.EvaluateMajority(task);
        Assert.Equal(0.5, majority.Accuracy, 6);
        var (teacherScores, _) = pipeline.EvaluateTeacher(task);
        Assert.Equal(20, teacherScores.Rows);
        Assert.InRange(teacherScores.Accuracy, 0, 1);
        // A first text far longer than the teacher's 128 positions is cut to fit instead of failing (CB/BoolQ passages).
        var longText = string.Join(' ', Enumerable.Repeat("the latte was really delicious and the staff were friendly .", 40));
        var longTask = task with { Dev = [], Test = [new TextPairRow { Text = longText, Label = "positive" }, new TextPairRow { Text = longText, Label = "negative" }] };
        Assert.Equal(2, pipeline.EvaluateTeacher(longTask).Test.Rows);

        var (fewShot, studentParameters) = pipeline.EvaluateFewShotStudent(task);
        Assert.InRange(fewShot.Accuracy, 0, 1);
        Assert.True(studentParameters > 0);

        // The store is data that several students train on: the same student with and without retrieval, same store.
        var extraction = pipeline.ExtractStore(task);
        Assert.InRange(extraction.Report.IntendedLabelShare!.Value, 0, 1);
        // Where the time went (batches resumed from the run's checkpoint above cost nothing), in the report's line.
        var times = extraction.Report.Times!;
        Assert.True(times.Generation >= TimeSpan.Zero && times.SoftLabels >= TimeSpan.Zero && times.Fluency >= TimeSpan.Zero);
        Assert.Contains("time in generation", extraction.Report.ToString());
        var withRetrieval = pipeline.EvaluateStudentOnStore(task, extraction, useRetrieval: true);
        var storeOnly = pipeline.EvaluateStudentOnStore(task, extraction, useRetrieval: false);
        Assert.Equal(extraction.Store.Count, withRetrieval.StoreSize);
        Assert.Equal(withRetrieval.StoreSize, storeOnly.StoreSize);
        Assert.Equal(0, storeOnly.RetrievalWeight);
        Assert.Equal(withRetrieval.StudentParameters, storeOnly.StudentParameters);

        // The Quickstart's path: the same student, kept to be saved and explained (store texts inside), scored the same way.
        var keepingOptions = pipeline.Options.Clone();
        keepingOptions.StudentSaveStoreTexts = true;
        keepingOptions.StudentNeighborsColumnName = "Neighbors";
        using var kept = new RetriKTPipeline(new MLContext(seed: 1), teacher, teacherPath, keepingOptions).TrainStudent(task, extraction);
        Assert.Equal(withRetrieval.Test, kept.Test);
        Assert.Equal(withRetrieval.RetrievalWeight, kept.Student.RetrievalWeight);
        Assert.Equal(kept.Test, pipeline.Score(task, kept.Student));
        Assert.Equal(20, pipeline.Score(task, kept.Student.WithRetrievalWeight(0)).Rows);
        var explained = kept.Student.Predict(task.Test[0].Text, neighbors: 2);
        Assert.Equal(2, explained.Neighbors.Count);
        Assert.All(explained.Neighbors, n => Assert.False(string.IsNullOrEmpty(n.Text)));
    }

    [Fact]
    public void AnExtractionCheckpointIsNamedAfterEveryPpoSettingThatShapesItsPrompts()
    {
        // A checkpoint is only valid for its prompts; unset options keep the names checkpoints had before they existed.
        Assert.Equal("", RetriKTPipeline.PpoNamePart(new RetriKTPipelineOptions()));
        Assert.Equal("-r64", RetriKTPipeline.PpoNamePart(new RetriKTPipelineOptions { RolloutsPerStep = 64 }));
        Assert.Equal("-lr0.03-kl0.05-r64", RetriKTPipeline.PpoNamePart(new RetriKTPipelineOptions { PpoLearningRate = 0.03, RolloutsPerStep = 64 }));
        Assert.Equal("-lr0.003-kloff", RetriKTPipeline.PpoNamePart(new RetriKTPipelineOptions { PpoMaxUpdateKl = 0 }));
        Assert.Equal("-lr0.01-kl0.02", RetriKTPipeline.PpoNamePart(new RetriKTPipelineOptions { PpoLearningRate = 0.01, PpoMaxUpdateKl = 0.02 }));
    }

    [Fact]
    public void ScoresMatchHandComputedAccuracyAndF1()
    {
        // gold:      0 0 0 1 1 2 ; predicted: 0 0 1 1 2 2
        var s = ClassificationScores.FromPredictions([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3);
        Assert.Equal(4 / 6.0, s.Accuracy, 9);
        // F1 per label: 2·2/(3+2) = 0.8, 2·1/(2+2) = 0.5, 2·1/(1+2) = 2/3.
        Assert.Equal((0.8 + 0.5 + 2 / 3.0) / 3, s.MacroF1, 9);
        Assert.Null(s.PositiveF1);
        var binary = ClassificationScores.FromPredictions([1, 1, 0, 0], [1, 0, 0, 0], 2);
        Assert.Equal(2 / 3.0, binary.PositiveF1!.Value, 9); // TP 1, gold 2, predicted 1
        Assert.Throws<ArgumentException>(() => ClassificationScores.FromPredictions([0], [0, 1], 2));
    }

    [Fact]
    public void RejectsATaskWithALabelOutsideItsLabelSet()
    {
        var task = EmbeddedCafeReviews.Task(testPerLabel: 2);
        var bad = task with { Train = [.. task.Train, new TextPairRow { Text = "fine coffee.", Label = "neutral" }] };
        using var teacher = TeacherModel.Create(new TeacherConfig { VocabSize = 300 }, ByteLevelBpeTrainer.Train(["a b c"], 300, Path.Combine(Temp, "tok")));
        var pipeline = new RetriKTPipeline(new MLContext(seed: 1), teacher, Temp);
        var e = Assert.Throws<ArgumentException>(() => pipeline.EvaluateFewShotStudent(bad));
        Assert.Contains("'neutral'", e.Message);
    }

    [Fact]
    public void AStudentShapeItsTrainerWouldRefuseIsRefusedBeforeAnyExtraction()
    {
        using var teacher = TeacherModel.Create(new TeacherConfig { VocabSize = 300 }, ByteLevelBpeTrainer.Train(["a b c"], 300, Path.Combine(Temp, "tok")));
        var ml = new MLContext(seed: 1);
        var wideRank = Assert.Throws<ArgumentOutOfRangeException>(() =>
            new RetriKTPipeline(ml, teacher, Temp, new RetriKTPipelineOptions { StudentHiddenSize = 12, StudentEmbeddingRank = 16 }));
        Assert.Contains("StudentEmbeddingRank (16) must be at most StudentHiddenSize (12)", wideRank.Message);
        var oddWidth = Assert.Throws<ArgumentOutOfRangeException>(() => new RetriKTPipeline(ml, teacher, Temp, new RetriKTPipelineOptions { StudentHiddenSize = 30 }));
        Assert.Contains("multiple of the student's 4 attention heads, found 30", oddWidth.Message);
        // Any other setting the student's trainer refuses, in its words.
        var dropout = Assert.Throws<ArgumentOutOfRangeException>(() => new RetriKTPipeline(ml, teacher, Temp, new RetriKTPipelineOptions { StudentTokenDropout = 1 }));
        Assert.Equal("Student settings: TokenDropout must be in [0, 1), found 1.", dropout.Message);
        var backbone = Assert.Throws<ArgumentOutOfRangeException>(() => new RetriKTPipeline(ml, teacher, Temp, new RetriKTPipelineOptions { StudentBackbone = Path.Combine(Temp, "no-such-encoder") }));
        Assert.StartsWith($"Student settings: Backbone '{Path.Combine(Temp, "no-such-encoder")}' not found", backbone.Message);
        // The evaluated recipe at a third of its width is a shape the trainer takes.
        var narrow = RetriKTPipelineOptions.EvaluatedRecipe();
        (narrow.StudentHiddenSize, narrow.StudentFeedForwardSize, narrow.StudentEmbeddingRank) = (16, 32, 8);
        Assert.Same(narrow, new RetriKTPipeline(ml, teacher, Temp, narrow).Options);
    }

    [Fact]
    public void AStoreStudentNoBetterThanTheMajorityOnTheGoldDevRowsIsWarnedAbout()
    {
        // A store that holds the dev texts under the wrong label teaches the opposite of the task; the same texts under
        // their own label teach it. The teacher's weights do not matter here: the stores are given, with no variants. The
        // entries carry a word more than the dev rows: validation rows that are store entries are left out of the mix's
        // choice (the student retrieves them at cosine 1), and a dev set of nothing else is refused.
        var task = EmbeddedCafeReviews.Task(testPerLabel: 4);
        var tokenizer = ByteLevelBpeTrainer.Train(EmbeddedCafeReviews.UnlabeledPool(300), 400, Path.Combine(Temp, "tokenizer-majority"));
        using var teacher = TeacherModel.Create(new TeacherConfig
        {
            ModelType = "llama", VocabSize = tokenizer.VocabSize, HiddenSize = 32, IntermediateSize = 64, NumLayers = 1, NumHeads = 4,
            NumKeyValueHeads = 4, HeadDim = 8, MaxPositions = 64, BosTokenId = tokenizer.BosId, EosTokenIds = [tokenizer.EosId!.Value],
        }, tokenizer, seed: 3);
        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
        var pipeline = new RetriKTPipeline(ml, teacher, Temp, new RetriKTPipelineOptions { StudentEpochs = 8, StudentHiddenSize = 32, StudentMaxLength = 48 });
        StoreExtraction Store(bool flipped)
        {
            var entries = Enumerable.Range(0, 6).SelectMany(_ => task.Dev).Select(r =>
            {
                int label = task.Labels.ToList().IndexOf(r.Label) ^ (flipped ? 1 : 0);
                float[] soft = label == 0 ? [1f, 0f] : [0f, 1f];
                return new KnowledgeEntry(r.Text + " truly.", null, label, soft, 1f, KnowledgeSource.Generated);
            });
            var store = new KnowledgeStore(task.Labels, entries);
            var report = new ExtractionReport(new Dictionary<string, int>(), new Dictionary<string, int>(), new Dictionary<DropReason, int>(), 0, 0, 0, 1, 0);
            return new StoreExtraction(store, report, 0, null, TimeSpan.Zero, TimeSpan.Zero);
        }

        using (var wrong = pipeline.TrainStudent(task, Store(flipped: true)))
        {
            Assert.True(wrong.FewShotDevAccuracy <= 0.5, $"dev accuracy {wrong.FewShotDevAccuracy}");
            Assert.Contains(warnings, w => w.Contains("The student trained on the store scores") && w.Contains($"gold few-shot dev rows of {task.Name}, no better than always answering"));
        }
        warnings.Clear();
        using (var right = pipeline.TrainStudent(task, Store(flipped: false)))
        {
            Assert.True(right.FewShotDevAccuracy > 0.5, $"dev accuracy {right.FewShotDevAccuracy}");
            Assert.DoesNotContain(warnings, w => w.Contains("The student trained on the store scores"));
        }
    }

    [Fact]
    public void HoldsOutGeneratedEntriesOnlyLabelledWithTheTeachersArgmax()
    {
        string[] labels = ["negative", "positive"];
        var entries = new List<KnowledgeEntry>();
        for (int i = 0; i < 4; i++) entries.Add(KnowledgeEntry.Gold($"gold {i}", null, i % 2, 2));
        // Generated for label 0 but the teacher prefers label 1 on every third sample: the held-out label follows the teacher.
        for (int i = 0; i < 40; i++)
            entries.Add(new KnowledgeEntry($"generated {i}", null, 0, i % 3 == 0 ? [0.2f, 0.8f] : [0.9f, 0.1f], 0.9f, KnowledgeSource.Generated));
        var store = new KnowledgeStore(labels, entries);

        var (kept, heldOut) = RetriKTPipeline.HoldOut(store, 0.25, seed: 5);

        Assert.Equal(10, heldOut.Count);
        Assert.Equal(34, kept.Count);
        Assert.Equal(4, kept.Entries.Count(e => e.Source == KnowledgeSource.FewShot));
        Assert.Empty(heldOut.Select(r => r.Text).Intersect(kept.Entries.Select(e => e.Text)));
        foreach (var row in heldOut)
        {
            int i = int.Parse(row.Text["generated ".Length..], System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(i % 3 == 0 ? "positive" : "negative", row.Label);
        }
        // The same seed holds out the same entries; another seed others.
        Assert.Equal(heldOut.Select(r => r.Text), RetriKTPipeline.HoldOut(store, 0.25, seed: 5).HeldOut.Select(r => r.Text));
        Assert.NotEqual(heldOut.Select(r => r.Text), RetriKTPipeline.HoldOut(store, 0.25, seed: 6).HeldOut.Select(r => r.Text));
        Assert.Throws<ArgumentOutOfRangeException>(() => RetriKTPipeline.HoldOut(store, 1.0, seed: 5));
    }

    /// <summary>
    /// The pipeline's hold-out took one of two entries with the same text (a store corpus of real sentences has them),
    /// and its twin stayed in the student's store: the mix and the epoch were tuned on a row the student trained on,
    /// which retrieves itself at cosine 1. A repeated text now stays whole; a store without repeats draws as before.
    /// </summary>
    [Fact]
    public void HoldOutNeverSplitsARepeatedText()
    {
        string[] labels = ["negative", "positive"];
        KnowledgeEntry Generated(string text) => new(text, null, 0, [0.9f, 0.1f], 0.9f, KnowledgeSource.Generated);
        var unique = Enumerable.Range(0, 40).Select(i => Generated($"generated {i}")).ToList();
        var repeated = Enumerable.Range(0, 20).Select(i => Generated($"repeated {i}")).ToList();
        var store = new KnowledgeStore(labels, unique.Concat(repeated).Concat(repeated));

        var (kept, heldOut) = RetriKTPipeline.HoldOut(store, 0.25, seed: 5);

        Assert.Equal(10, heldOut.Count);                                 // a quarter of the 40 entries that may leave
        Assert.All(heldOut, r => Assert.StartsWith("generated ", r.Text));
        Assert.Empty(heldOut.Select(r => r.Text).Intersect(kept.Entries.Select(e => e.Text)));
        Assert.Equal(70, kept.Count);
        // Without repeats the draw is the one it always was.
        var plain = new KnowledgeStore(labels, unique);
        Assert.Equal(RetriKTPipeline.HoldOut(plain, 0.25, seed: 5).HeldOut.Select(r => r.Text), heldOut.Select(r => r.Text));
    }
}
