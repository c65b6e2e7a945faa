using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Pipeline;

/// <summary>Test-split metrics of one classifier.</summary>
/// <param name="Accuracy">Share of correct predictions (ML.NET's micro-accuracy).</param>
/// <param name="MacroF1">Unweighted mean over labels of the per-label F1.</param>
/// <param name="PositiveF1">F1 of the second label for binary tasks (the "F1" LM-BFF reports for MRPC), else null.</param>
/// <param name="Rows">Test rows scored.</param>
public sealed record ClassificationScores(double Accuracy, double MacroF1, double? PositiveF1, int Rows)
{
    /// <summary>Scores from gold and predicted label indices over <paramref name="labelCount"/> labels.</summary>
    public static ClassificationScores FromPredictions(IReadOnlyList<int> gold, IReadOnlyList<int> predicted, int labelCount)
    {
        ArgumentNullException.ThrowIfNull(gold); ArgumentNullException.ThrowIfNull(predicted);
        if (gold.Count != predicted.Count) throw new ArgumentException($"{gold.Count} gold labels but {predicted.Count} predictions.");
        if (gold.Count == 0) throw new ArgumentException("No rows to score.");
        var confusion = new double[labelCount, labelCount];
        for (int i = 0; i < gold.Count; i++) confusion[gold[i], predicted[i]]++;
        return FromConfusion(confusion);
    }

    /// <summary>Scores from a confusion matrix indexed [gold, predicted].</summary>
    public static ClassificationScores FromConfusion(double[,] confusion)
    {
        ArgumentNullException.ThrowIfNull(confusion);
        int k = confusion.GetLength(0);
        double total = 0, correct = 0;
        var f1 = new double[k];
        for (int c = 0; c < k; c++)
        {
            double tp = confusion[c, c], goldCount = 0, predictedCount = 0;
            for (int j = 0; j < k; j++) { goldCount += confusion[c, j]; predictedCount += confusion[j, c]; total += confusion[c, j]; }
            correct += tp;
            // F1 = 2TP / (gold + predicted); a label absent from both counts as 0 (scikit-learn's zero_division=0).
            f1[c] = goldCount + predictedCount == 0 ? 0 : 2 * tp / (goldCount + predictedCount);
        }
        return new ClassificationScores(correct / total, f1.Average(), k == 2 ? f1[1] : null, (int)total);
    }
}

/// <summary>Wall time per stage of one pipeline run.</summary>
/// <param name="SoftPrompts">Prompt tuning (stage 1) and PPO (stage 2).</param>
/// <param name="Extraction">Knowledge extraction (generation, soft labels, filtering).</param>
/// <param name="Student">Student training including λ/τ tuning.</param>
/// <param name="Evaluation">Scoring the test split.</param>
public sealed record PipelineTimings(TimeSpan SoftPrompts, TimeSpan Extraction, TimeSpan Student, TimeSpan Evaluation)
{
    /// <summary>Sum of the stages.</summary>
    public TimeSpan Total => SoftPrompts + Extraction + Student + Evaluation;
}

/// <summary>Outcome of <see cref="RetriKTPipeline.Run"/> on one task.</summary>
/// <param name="Task">Task name.</param>
/// <param name="Seed">The task's few-shot split seed (null for FewGLUE).</param>
/// <param name="Test">Student metrics on the task's test split (the official dev set).</param>
/// <param name="FewShotDevAccuracy">Student accuracy on the few-shot dev split (what model selection sees).</param>
/// <param name="TeacherParameters">Teacher parameter count.</param>
/// <param name="StudentParameters">Student parameter count.</param>
/// <param name="PromptParameters">Soft-prompt parameter count (the only teacher-side trained weights).</param>
/// <param name="StoreSize">Knowledge-store entries (generated + few-shot gold).</param>
/// <param name="RetrievalWeight">λ the student predicts with (chosen on the tuning rows: the few-shot dev split and held-out store rows).</param>
/// <param name="LexicalRetrievalWeight">μ, the weight of term-match retrieval in the student's prediction (tuned with λ).</param>
/// <param name="Extraction">The extraction report (generated, kept, dropped, diversity, fidelity).</param>
/// <param name="SoftPromptReport">Prompt-tuning losses and PPO metrics.</param>
/// <param name="Timings">Wall time per stage.</param>
public sealed record RetriKTPipelineResult(string Task, int? Seed, ClassificationScores Test, double FewShotDevAccuracy,
    long TeacherParameters, long StudentParameters, long PromptParameters, int StoreSize, double RetrievalWeight, double LexicalRetrievalWeight,
    ExtractionReport Extraction, SoftPromptTrainingReport? SoftPromptReport, PipelineTimings Timings)
{
    /// <summary>Student parameters divided by teacher parameters.</summary>
    public double ParameterRatio => (double)StudentParameters / TeacherParameters;
}

/// <summary>What <see cref="RetriKTPipeline.ExtractStore"/> produced: the knowledge store and how it was made.</summary>
/// <param name="Store">Generated samples with the teacher's soft labels, plus the few-shot gold rows.</param>
/// <param name="Report">The extraction report (generated, kept, dropped, diversity, fidelity).</param>
/// <param name="PromptParameters">Soft-prompt parameter count (the only teacher-side trained weights).</param>
/// <param name="SoftPromptReport">Prompt-tuning losses and PPO metrics.</param>
/// <param name="SoftPromptTime">Wall time of prompt tuning and PPO.</param>
/// <param name="ExtractionTime">Wall time of generation, soft labelling and filtering.</param>
public sealed record StoreExtraction(KnowledgeStore Store, ExtractionReport Report, long PromptParameters, SoftPromptTrainingReport? SoftPromptReport,
    TimeSpan SoftPromptTime, TimeSpan ExtractionTime)
{
    /// <summary>
    /// A store of <paramref name="task"/>'s few-shot rows alone, with their gold labels, and nothing generated (no soft
    /// prompts, no teacher time). With <see cref="RetriKTPipelineOptions.StoreCorpus"/> it is the store of plain
    /// distillation on unlabelled text: the few-shot rows and the teacher-labelled sentences.
    /// </summary>
    public static StoreExtraction FewShotRows(FewShotTask task)
    {
        ArgumentNullException.ThrowIfNull(task);
        RetriKTPipeline.CheckLabels(task, "train", task.Train);
        var labels = task.Labels.ToList();
        var store = new KnowledgeStore(labels, task.Train.Select(r =>
            KnowledgeEntry.Gold(r.Text, string.IsNullOrEmpty(r.Text2) ? null : r.Text2, labels.IndexOf(r.Label), labels.Count)));
        var none = labels.ToDictionary(l => l, _ => 0);
        var report = new ExtractionReport(none, none, new Dictionary<DropReason, int>(), store.Count, 0, 0, 0, 0);
        return new StoreExtraction(store, report, 0, null, TimeSpan.Zero, TimeSpan.Zero);
    }
}

/// <summary>
/// A student from <see cref="RetriKTPipeline.TrainStudent"/>, kept rather than scored and disposed: save it, serve it,
/// explain its predictions. The caller owns it.
/// </summary>
/// <param name="Student">The trained transformer (PredictedLabel is a key over the task's labels, in their order).</param>
/// <param name="Test">Its metrics on the task's test split.</param>
/// <param name="FewShotDevAccuracy">Its accuracy on the few-shot dev split (NaN when the task has none).</param>
/// <param name="TrainTime">Wall time of training, λ/τ tuning included.</param>
/// <param name="EvaluationTime">Wall time of scoring the test split.</param>
public sealed record TrainedStudent(RetrievalClassifierTransformer Student, ClassificationScores Test, double FewShotDevAccuracy,
    TimeSpan TrainTime, TimeSpan EvaluationTime) : IDisposable
{
    /// <summary>Teacher-labelled variants added to the student's store (<see cref="RetriKTPipelineOptions.StoreVariantsPerSample"/>); 0 when none.</summary>
    public int StoreVariants { get; init; }
    /// <summary>Teacher-labelled sentences of <see cref="RetriKTPipelineOptions.StoreCorpus"/> added to the student's store (before the validation share is held out); 0 when none.</summary>
    public int StoreCorpusEntries { get; init; }

    /// <summary>Disposes <see cref="Student"/>.</summary>
    public void Dispose() => Student.Dispose();
}
