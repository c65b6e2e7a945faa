using Microsoft.ML;
using RetriKT.Evaluation;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>
/// Scoring the teacher over a test split takes minutes on a CPU (872 SST-2 rows), so it reports progress and stops on
/// cancellation between forward passes, without moving a prediction (the published teacher row must not change). On the
/// harness's real SST-2 stand-in teacher, real SST-2 sentences and the real LM-BFF seed-13 split.
/// </summary>
public sealed class TeacherEvaluationProgressTests
{
    [SharedDataFact]
    public void TheVerbalizerScoresTheSameWithProgressAndReachesEveryRow()
    {
        using var teacher = ShippedTeachers.Sst2();
        var samples = ShippedTeachers.Sst2DevSentences(70);
        // Both paths: one pass per sample (single-token words) and one row per (sample, word), which counts rows in samples.
        foreach (bool rowPerWord in new[] { false, true })
        {
            // A batch of 32 splits the 70 samples (140 rows) unevenly, so the length-sorted batching and its reordering are exercised.
            var classifier = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"], calibrate: true, batchSize: 32, rowPerWord);
            var reports = new List<(int Done, int Total)>();
            var reported = classifier.Probabilities(samples, (done, total) => reports.Add((done, total)), CancellationToken.None);
            var plain = classifier.Probabilities(samples);
            // Bit-identical, not merely close: the same batches in the same order through the same math.
            Assert.Equal(plain.Length, reported.Length);
            for (int i = 0; i < plain.Length; i++) Assert.Equal(plain[i], reported[i]);
            if (!rowPerWord) Assert.Equal(classifier.Predict(samples), classifier.Predict(samples, (_, _) => { }, CancellationToken.None));

            Assert.True(reports.Count > 1, $"rowPerWord {rowPerWord}: {reports.Count} report(s)");
            Assert.All(reports, r => Assert.Equal(samples.Count, r.Total));
            Assert.Equal(samples.Count, reports[^1].Done);
            Assert.True(reports.Zip(reports.Skip(1)).All(p => p.First.Done <= p.Second.Done), "the count of scored samples went back");
        }
    }

    [SharedDataFact]
    public void TheTeacherRowIsTheSameWithProgressAndTheReportsCountEveryScoredRow()
    {
        var (teacher, path) = TeacherBuilder.LoadShipped(SharedData.RepoRoot, "SST-2");
        using var _ = teacher;
        var task = Sst2Task();
        var pipeline = new RetriKTPipeline(new MLContext(seed: 1), teacher, path);
        var reports = new List<TrainingProgress>();
        var (withProgress, calibratedWithProgress) = pipeline.EvaluateTeacher(task, new SyncProgress(reports.Add), CancellationToken.None);
        var (plain, calibrated) = pipeline.EvaluateTeacher(task);

        Assert.Equal(plain, withProgress);
        Assert.Equal(calibrated, calibratedWithProgress);
        // The dev split is scanned twice (with and without calibration), the test split once: one count over the three.
        int total = 2 * task.Dev.Count + task.Test.Count;
        Assert.All(reports, r => Assert.Equal((RetriKTPipeline.TeacherEvaluationStage, (long)total), (r.Stage, r.TotalSteps)));
        Assert.Equal(total, reports[^1].Step);
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.First.Step <= p.Second.Step), "the count of scored rows went back");
        // Each scan reports after each forward pass of 16 rows, not only at its end.
        Assert.Contains(reports, r => r.Step > 2 * task.Dev.Count && r.Step < total);
    }

    [SharedDataFact]
    public void ATokenCancelledAfterTheFirstReportStopsBeforeTheNextForwardPass()
    {
        var (teacher, path) = TeacherBuilder.LoadShipped(SharedData.RepoRoot, "SST-2");
        using var _ = teacher;
        var task = Sst2Task();
        var pipeline = new RetriKTPipeline(new MLContext(seed: 1), teacher, path);
        using var cancel = new CancellationTokenSource();
        var reports = new List<TrainingProgress>();
        Assert.ThrowsAny<OperationCanceledException>(() => pipeline.EvaluateTeacher(task, new SyncProgress(p =>
        {
            reports.Add(p);
            cancel.Cancel();
        }), cancel.Token));
        // Promptly: no forward pass ran after the one whose report cancelled.
        var report = Assert.Single(reports);
        Assert.Equal(16, report.Step);

        // The verbalizer on its own stops the same way, between passes.
        var classifier = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"], calibrate: false);
        using var cancelScan = new CancellationTokenSource();
        int calls = 0;
        Assert.ThrowsAny<OperationCanceledException>(() => classifier.Predict(ShippedTeachers.Sst2DevSentences(100), (_, _) =>
        {
            calls++;
            cancelScan.Cancel();
        }, cancelScan.Token));
        Assert.Equal(1, calls);
    }

    /// <summary>SST-2's LM-BFF seed-13 split with its test split cut to 80 rows, so a scan takes seconds.</summary>
    private static FewShotTask Sst2Task()
    {
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", seed: 13);
        return task with { Test = task.Test.Take(80).ToList() };
    }
}
