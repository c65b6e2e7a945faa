using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>
/// How the pipeline composes its stages from its options: an option reaches the stage it is for, and no stage does
/// work whose result nothing uses. The stores are given and the teacher is never run, so each test trains one tiny student.
/// </summary>
public sealed class PipelineCompositionTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-pipeline-composition-");

    public void Dispose() => _folder.Dispose();

    /// <summary>
    /// StoreValidationShare held a tenth of the store's generated entries out of the student's store even with
    /// TuneOnFewShotDev off, where nothing is tuned on them: the student silently lost 10 % of its store (here 8 of 80
    /// generated entries) for nothing. Held-out rows are now made only when they are tuned on.
    /// </summary>
    [Fact]
    public void WithoutTuningNoStoreEntryIsHeldOutOfTheStudentsStore()
    {
        var task = EmbeddedCafeReviews.Task(testPerLabel: 4);
        var generated = EmbeddedCafeReviews.UnlabeledPool(80, seed: 11).Select((text, i) =>
            new KnowledgeEntry(text, null, i % 2, i % 2 == 0 ? [0.9f, 0.1f] : [0.1f, 0.9f], 0.9f, KnowledgeSource.Generated));
        var gold = task.Train.Select(r => KnowledgeEntry.Gold(r.Text, null, task.Labels.ToList().IndexOf(r.Label), 2));
        var store = new KnowledgeStore(task.Labels, gold.Concat(generated));
        var report = new ExtractionReport(new Dictionary<string, int>(), new Dictionary<string, int>(), new Dictionary<DropReason, int>(), task.Train.Count, 0, 0, 0, 0);
        var extraction = new StoreExtraction(store, report, 0, null, TimeSpan.Zero, TimeSpan.Zero);
        using var teacher = TeacherModel.Create(new TeacherConfig { VocabSize = 300 }, ByteLevelBpeTrainer.Train(["a b c"], 300, _folder.File("tokenizer")));
        RetriKTPipeline Pipeline(bool tune) => new(new MLContext(seed: 1), teacher, _folder.Path, new RetriKTPipelineOptions
        {
            StudentEpochs = 1, StudentHiddenSize = 16, StudentLayers = 1, StudentMaxLength = 32, TuneOnFewShotDev = tune,
        });

        using (var untuned = Pipeline(tune: false).TrainStudent(task, extraction))
            Assert.Equal(store.Count, untuned.Student.Store.Count);
        // With tuning the share is held out, as before: 8 of the 80 generated entries.
        using (var tuned = Pipeline(tune: true).TrainStudent(task, extraction))
            Assert.Equal(store.Count - 8, tuned.Student.Store.Count);
    }

    /// <summary>
    /// Score compared the model's PredictedLabel key i with the task's label i without looking at what the model calls
    /// key i: a student whose labels are in another order (trained on the same task loaded with its labels listed the other
    /// way round, or loaded from another run) was scored on swapped labels, its accuracy turned into one minus itself.
    /// The model's key names are now compared with the task's labels first.
    /// </summary>
    [Fact]
    public void AModelWhoseLabelsAreInAnotherOrderIsNotScoredOnSwappedLabels()
    {
        var task = EmbeddedCafeReviews.Task(testPerLabel: 8);
        var reversed = task with { Labels = [.. task.Labels.Reverse()] };
        using var teacher = TeacherModel.Create(new TeacherConfig { VocabSize = 300 }, ByteLevelBpeTrainer.Train(["a b c"], 300, _folder.File("tokenizer")));
        var pipeline = new RetriKTPipeline(new MLContext(seed: 1), teacher, _folder.Path, new RetriKTPipelineOptions
        {
            StudentEpochs = 8, StudentHiddenSize = 16, StudentLayers = 1, StudentMaxLength = 32,
        });
        using var student = pipeline.TrainStudent(reversed, StoreExtraction.FewShotRows(reversed));
        Assert.Equal(reversed.Labels, student.Student.LabelNames);
        Assert.Equal(student.Test, pipeline.Score(reversed, student.Student));
        var e = Assert.Throws<ArgumentException>(() => pipeline.Score(task, student.Student));
        Assert.Equal("Task 'CafeReviews': the model predicts the labels [positive, negative] and the task has [negative, positive] " +
                     "(in score order); scored as they are, its predictions would be read as other labels.", e.Message);
    }
}
