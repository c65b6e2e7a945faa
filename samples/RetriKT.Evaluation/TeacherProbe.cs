using RetriKT.MLNet.Pipeline;
using RetriKT.Samples.Data;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;

namespace RetriKT.Evaluation;

/// <summary>
/// Diagnoses a teacher as a prompted classifier (verb <c>probe</c>): verbalizer accuracy, raw and calibrated, on the
/// official dev set and on samples of the task's training split (any length, and sentences of 15 words or more, like dev's). A teacher far better on training rows than on dev
/// overfits its stage B; one poor on both underfits. Dev is only scored, never trained on.
/// </summary>
public static class TeacherProbe
{
    /// <param name="cancellation">Checked before each of the teacher's forward passes (SIGTERM and Ctrl+C waited for the whole probe and ended it with exit code 0).</param>
    public static void Run(string dataRoot, string task, string teacherPath, int trainSample, Action<string> log, CancellationToken cancellation = default)
    {
        using var teacher = TeacherBuilder.Load(teacherPath);
        teacher.RequiresGrad = false;
        var fewShot = FewShotBenchmarks.Load(dataRoot, task);
        var labelIndex = fewShot.Labels.Select((l, i) => (l, i)).ToDictionary(p => p.l, p => p.i);
        var train = FewShotBenchmarks.LoadFullTrainingSplit(dataRoot, task) ?? [];
        var rng = new Random(7);
        var shuffled = train.OrderBy(_ => rng.Next()).ToList();
        var trainRows = shuffled.Take(trainSample).ToList();
        // Dev rows are whole sentences (19 words on average); most training rows are short phrases.
        var longTrainRows = shuffled.Where(r => r.Text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length >= 15).Take(trainSample).ToList();
        log($"Probe of {teacherPath} (sha256 {teacher.ContentHash[..16]}…) on {task}");
        foreach (bool calibrate in new[] { false, true })
        {
            var classifier = new VerbalizerClassifier(teacher, fewShot.Template, fewShot.Labels, calibrate);
            foreach (var (name, rows) in new[] { ("dev", fewShot.Test), ("train sample", (IReadOnlyList<TextPairRow>)trainRows), ("train ≥15 words", longTrainRows) })
            {
                if (rows.Count == 0) continue;
                var predicted = classifier.Predict(rows.Select(r => (r.Text, string.IsNullOrEmpty(r.Text2) ? null : r.Text2)).ToList(), cancellation: cancellation);
                double accuracy = rows.Select((r, i) => predicted[i] == labelIndex[r.Label] ? 1.0 : 0.0).Average();
                var shares = string.Join(" / ", fewShot.Labels.Select((l, k) => $"{l} {predicted.Count(p => p == k) * 100.0 / rows.Count:F0}%"));
                log($"  {(calibrate ? "calibrated" : "raw"),-10} {name,-16} n={rows.Count,5}  accuracy {accuracy * 100:F1} %  (predicted {shares})");
            }
        }
    }
}
