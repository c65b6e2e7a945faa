using System.Text.Json;
using Microsoft.ML;
using RetriKT.MLNet.Encoders;

namespace RetriKT.Evaluation;

/// <summary>
/// The tiny student's pretrained encoder per task (the <c>*-mlm</c> rows): <see cref="TinyEncoderPretrainer"/> on the
/// task teacher's stage-A corpus (the same unlabeled text, never a label), cached under
/// <c>&lt;cache&gt;/tiny-encoder-&lt;task&gt;-&lt;recipe hash&gt;/</c>. Built once; a finished folder holds pretraining.json.
/// </summary>
public static class TinyEncoderBuilder
{
    /// <summary>The recipe: the pretrainer's defaults (hidden 48, 2 layers, 1,400 pieces, 6,000 steps of 64 windows), seed 1.</summary>
    public static TinyEncoderPretrainerOptions Options() => new() { Seed = 1 };

    /// <summary>The folder of <paramref name="task"/>'s tiny encoder, built first when it is not cached.</summary>
    public static string EnsureBuilt(string dataRoot, string cacheRoot, string task, TeacherSettings teacherSettings, Action<string> log, CancellationToken cancellation)
    {
        var options = Options();
        string recipe = "tiny-encoder-v1|" + JsonSerializer.Serialize(options, new JsonSerializerOptions { IncludeFields = true }) + "|" +
                        string.Join(",", TeacherSettings.StageACorpora(task)) + $"|parts {teacherSettings.CorpusParts}|order {teacherSettings.Seed}";
        string key = KeyHash.Of(recipe);
        var folder = Path.Combine(cacheRoot, $"tiny-encoder-{task}-{key}");
        if (File.Exists(Path.Combine(folder, "pretraining.json")))
        {
            log($"Tiny encoder ({task}): cached at {folder}");
            return folder;
        }
        log($"Tiny encoder ({task}): pretraining on the teacher's stage-A corpus ({string.Join(", ", TeacherSettings.StageACorpora(task))}) into {folder}");
        var texts = TeacherBuilder.StageAText(dataRoot, task, teacherSettings, log);
        var mlContext = new MLContext(seed: 1);
        var progress = SynchronousProgress.Every(TimeSpan.FromSeconds(30), p =>
            log($"    {p.Stage} {p.Step}/{p.TotalSteps}{(p.Metrics.TryGetValue("smoothedLoss", out var loss) ? FormattableString.Invariant($" loss {loss:F3}") : "")}"));
        var report = new TinyEncoderPretrainer(mlContext, options).Train(texts, folder, progress, cancellation);
        log(FormattableString.Invariant(
            $"Tiny encoder ({task}): {report.Parameters:N0} parameters; {report.Documents:N0} documents, {report.Windows:N0} windows, {report.CorpusTokens:N0} pieces ({100 * report.UnknownShare:F1} % [UNK]); final loss {report.FinalLoss:F3}; {report.Elapsed.TotalMinutes:F1} min"));
        return folder;
    }
}
