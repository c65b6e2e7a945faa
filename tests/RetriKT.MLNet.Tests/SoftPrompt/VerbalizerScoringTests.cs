using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// The verbalizer classifier's one-pass scoring (single-token label words: one row per sample, the LM head at its last
/// position) gives the soft labels of the general path (one full row per label word), on the harness's real SST-2
/// stand-in teacher and real SST-2 sentences; a template whose words span several tokens keeps the general path.
/// </summary>
public sealed class VerbalizerScoringTests
{
    [SharedDataFact]
    public void OnePassSoftLabelsEqualTheRowPerWordOnes()
    {
        using var teacher = ShippedTeachers.Sst2();
        var samples = ShippedTeachers.Sst2DevSentences(150);
        foreach (bool calibrate in new[] { false, true })
        {
            // A batch of 64 splits the 150 samples unevenly, so the length-sorted batching and its reordering are exercised.
            var fast = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"], calibrate, batchSize: 64);
            var general = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"], calibrate, batchSize: 64, rowPerWord: true);
            Assert.True(fast.SingleTokenWords);
            Assert.False(general.SingleTokenWords);
            var a = fast.Probabilities(samples);
            var b = general.Probabilities(samples);
            double worst = a.Zip(b).Max(p => p.First.Zip(p.Second).Max(x => Math.Abs(x.First - x.Second)));
            Assert.True(worst < 1e-5, $"calibrate {calibrate}: largest soft-label difference {worst:E2}");
            // Not a vacuous match: the teacher is confident on some sentences and unsure on others.
            Assert.Contains(a, p => p.Max() > 0.9f);
            Assert.Contains(a, p => p.Max() < 0.7f);
        }
    }

    [SharedDataFact]
    public void NextTokenScoresEqualOneTokenContinuationsInTheCallersOrder()
    {
        using var teacher = ShippedTeachers.Sst2();
        var prefixes = ShippedTeachers.Sst2DevSentences(9).Select(s => s.Text + " It was").ToList();
        int great = teacher.Tokenizer!.Encode(" great", false).Single(), terrible = teacher.Tokenizer.Encode(" terrible", false).Single();
        var scores = teacher.ScoreNextTokens(prefixes, [great, terrible], batchSize: 4);
        var reference = teacher.ScoreContinuations([.. prefixes, .. prefixes], [.. prefixes.Select(_ => " great"), .. prefixes.Select(_ => " terrible")]);
        for (int i = 0; i < prefixes.Count; i++)
        {
            Assert.Equal(reference[i], scores[i][0], 4);
            Assert.Equal(reference[prefixes.Count + i], scores[i][1], 4);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => teacher.ScoreNextTokens(prefixes, [teacher.Config.VocabSize]));

        // Rows are scored in length order, but a bad row is named by its index in the caller's list.
        var empty = Assert.Throws<ArgumentException>(() => teacher.ScoreContinuations([prefixes[0], "a", prefixes[1]], [" great", " great", ""]));
        Assert.Contains("Continuation 2 is empty", empty.Message);
    }

    [SharedDataFact]
    public void AWordOfSeveralTokensKeepsTheGeneralPath()
    {
        using var teacher = ShippedTeachers.Sst2();
        var template = new TaskTemplate
        {
            Name = "SST-2 (long words)", ClassificationFormat = "{text} It was{label}",
            Verbalizer = new Dictionary<string, string> { ["0"] = " terribly boring", ["1"] = " great" },
        };
        Assert.True(teacher.Tokenizer!.Encode(" terribly boring", false).Length > 1);
        var classifier = new VerbalizerClassifier(teacher, template, ["0", "1"], calibrate: false);
        Assert.False(classifier.SingleTokenWords);
        var p = classifier.Probabilities(ShippedTeachers.Sst2DevSentences(4));
        Assert.All(p, row => Assert.Equal(1.0, row.Sum(), 5));
    }
}
