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
