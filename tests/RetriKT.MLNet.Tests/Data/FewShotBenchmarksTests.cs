using RetriKT.Samples.Data;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Data;

public class FewShotBenchmarksTests
{
    [SharedDataFact]
    public void EveryTaskLoadsWithThePublishedSplitSizesAndLabels()
    {
        var root = SharedData.Path("data");
        var expected = new Dictionary<string, (int Train, int Dev, int Test)>
        {
            ["SST-2"] = (32, 32, 872), ["CoLA"] = (32, 32, 1043), ["MRPC"] = (32, 32, 408), ["RTE"] = (32, 32, 277),
            ["QNLI"] = (32, 32, 5463), ["CB"] = (32, 32, 56), ["BoolQ"] = (32, 32, 3270),
        };
        foreach (var name in FewShotBenchmarks.Tasks)
        {
            var task = FewShotBenchmarks.Load(root, name, seed: 13);
            Assert.Equal(expected[name], (task.Train.Count, task.Dev.Count, task.Test.Count));
            foreach (var row in task.Train.Concat(task.Dev).Concat(task.Test))
            {
                Assert.Contains(row.Label, task.Labels);
                Assert.False(string.IsNullOrWhiteSpace(row.Text), $"{name}: empty text");
                Assert.Equal(task.IsPair, row.Text2.Length > 0);
            }
            task.Template.Validate(task.Labels);
            Assert.InRange(task.MajorityAccuracy(), 0.3, 0.75);
        }
        Assert.Equal(0.5092, FewShotBenchmarks.Load(root, "SST-2").MajorityAccuracy(), 3); // 444 of 872 dev sentences are positive
    }

    [SharedDataFact]
    public void MissingFilesAndUnknownTasksAreNamed()
    {
        var root = SharedData.Path("data");
        Assert.Contains("seed 7", Assert.Throws<DirectoryNotFoundException>(() => FewShotBenchmarks.Load(root, "SST-2", seed: 7)).Message);
        Assert.Contains("Unknown task 'MNLI'", Assert.Throws<ArgumentException>(() => FewShotBenchmarks.Load(root, "MNLI")).Message);
        Assert.Throws<DirectoryNotFoundException>(() => FewShotBenchmarks.Load("/nonexistent", "SST-2"));
    }
}

public class EmbeddedCafeReviewsTests
{
    [Fact]
    public void SplitsAreBalancedDisjointDeterministicAndApartFromThePool()
    {
        var task = EmbeddedCafeReviews.Task();
        Assert.Equal((32, 32, 200), (task.Train.Count, task.Dev.Count, task.Test.Count));
        Assert.All(EmbeddedCafeReviews.Labels, l => Assert.Equal(16, task.Train.Count(r => r.Label == l)));
        var pool = EmbeddedCafeReviews.UnlabeledPool().ToHashSet();
        var all = task.Train.Concat(task.Dev).Concat(task.Test).Select(r => r.Text).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.DoesNotContain(all, pool.Contains);
        Assert.Equal(task.Train.Select(r => r.Text), EmbeddedCafeReviews.Task().Train.Select(r => r.Text));
        Assert.InRange(EmbeddedCafeReviews.UnlabeledPool().Count(t => t.Contains("overall it was")), 1000, 2000);
        task.Template.Validate(task.Labels);
    }
}

public class LabelledTsvTests
{
    /// <summary>
    /// An own task's test file could hold rows of its training or dev file: the student (whose store holds the training
    /// rows, which retrieval finds at similarity 1) was then scored on rows it learned or was chosen on, an accuracy that
    /// reads like a held-out one. The load now fails naming both files and lines.
    /// </summary>
    [Fact]
    public void AnOwnTestOrDevRowThatIsAlsoARowItLearnsOrIsChosenOnIsNamedWithBothLines()
    {
        using var temp = new TempDir("retrikt-own-task-");
        string Write(string name, params string[] lines)
        {
            var path = temp.File(name);
            File.WriteAllLines(path, ["text\tlabel", .. lines]);
            return path;
        }
        var template = new RetriKT.MLNet.SoftPrompt.TaskTemplate
        {
            Name = "own", ClassificationFormat = "{text} It was{label}",
            Verbalizer = new Dictionary<string, string> { ["neg"] = " terrible", ["pos"] = " great" },
        };
        string[] labels = ["neg", "pos"];
        var train = Write("train.tsv", "a fine film\tpos", "a dull film\tneg");
        var dev = Write("dev.tsv", "a warm film\tpos", "a cold film\tneg");
        var test = Write("test.tsv", "a long film\tneg", "a short film\tpos");
        Assert.Equal(2, LabelledTsv.LoadTask(train, dev, test, template, labels).Test.Count);

        var leakyTest = Write("leaky-test.tsv", "a long film\tneg", "a dull film\tneg", "a warm film\tpos");
        Assert.Equal($"{leakyTest} line 3: the same text as {train} line 3 (2 of its 3 rows are in the training or dev file); " +
                     "the rows scored must be apart from the rows learned or chosen on.",
            Assert.Throws<InvalidDataException>(() => LabelledTsv.LoadTask(train, dev, leakyTest, template, labels)).Message);
        var leakyDev = Write("leaky-dev.tsv", "a fine film\tpos", "a cold film\tneg");
        Assert.Equal($"{leakyDev} line 2: the same text as {train} line 2 (1 of its 2 rows are in the training file); " +
                     "the rows chosen on must be apart from the rows learned on.",
            Assert.Throws<InvalidDataException>(() => LabelledTsv.LoadTask(train, leakyDev, test, template, labels)).Message);
    }
}
