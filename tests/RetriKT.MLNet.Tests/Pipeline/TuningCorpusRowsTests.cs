using Microsoft.ML;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>
/// The pipeline's teacher-labelled tuning rows (<see cref="RetriKTPipelineOptions.TuningCorpus"/>) with the shipped SST-2
/// stand-in teacher on real critics' sentences: the drawn sentences, each filed under the label the teacher's calibrated
/// verbalizer gives it, and a clear refusal for a sentence-pair task.
/// </summary>
public class TuningCorpusRowsTests
{
    private static readonly string Corpus = SharedData.Path("data", "corpora", "movie-reviews-polarity-v2");

    [Fact]
    public void CorpusSentencesGetTheTeachersLabelAndPairTasksAreRefused()
    {
        using var teacher = ShippedTeachers.Sst2();
        var options = new RetriKTPipelineOptions { TuningCorpus = Corpus, TuningCorpusRows = 96, Seed = 13 };
        var pipeline = new RetriKTPipeline(new MLContext(seed: 1), teacher, "shipped", options);
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", 13);

        var rows = pipeline.TeacherLabelledCorpusRows(task, null, CancellationToken.None);

        Assert.Equal(CorpusSentences.Draw(Corpus, 96, 13), rows.Select(r => r.Text));
        var scorer = new RetriKT.MLNet.SoftPrompt.VerbalizerClassifier(teacher, task.Template, task.Labels, calibrate: true);
        var probabilities = scorer.Probabilities(rows.Select(r => (r.Text, (string?)null)).ToList());
        for (int i = 0; i < rows.Count; i++)
            Assert.Equal(task.Labels[probabilities[i][1] > probabilities[i][0] ? 1 : 0], rows[i].Label);
        // Critics' sentences are of both kinds; a teacher (or a label map) that filed them all under one would be no tuning set.
        Assert.All(task.Labels, l => Assert.InRange(rows.Count(r => r.Label == l), 20, 76));

        var pair = FewShotBenchmarks.Load(SharedData.Path("data"), "MRPC", 13);
        var e = Assert.Throws<ArgumentException>(() => pipeline.TeacherLabelledCorpusRows(pair, null, CancellationToken.None));
        Assert.Equal($"TuningCorpus '{Corpus}' gives single sentences; task MRPC takes sentence pairs. Leave TuningCorpus unset for it.", e.Message);

        // Without held-out store rows there is no teacher-labelled half for the corpus to join: the pipeline says so when it is built.
        var extraction = StoreExtraction.FewShotRows(task);
        var noShare = options.Clone();
        noShare.StoreValidationShare = 0;
        var refused = Assert.Throws<ArgumentException>(() => new RetriKTPipeline(new MLContext(seed: 1), teacher, "shipped", noShare).TrainStudent(task, extraction));
        Assert.Equal($"TuningCorpus '{Corpus}' joins the teacher-labelled tuning rows, which need StoreValidationShare > 0 and TuneOnFewShotDev; " +
                     "found StoreValidationShare 0 and TuneOnFewShotDev True.", refused.Message);
    }
}
