using Microsoft.ML;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>UnlabeledData of a sentence-pair template: every row has both texts, or the row is named before the teacher labels anything.</summary>
public class UnlabeledPairTests
{
    [Fact]
    public void APairTemplatesUnlabelledRowWithoutASecondText_FailsNamingTheRowAndColumn()
    {
        var ml = new MLContext(seed: 1);
        var rows = new[]
        {
            new TextPairRow { Text = "The cat sat on the mat.", Text2 = "A cat is sitting." },
            new TextPairRow { Text = "It rained all day.", Text2 = "  " },
        };
        var error = Assert.Throws<ArgumentException>(() => KnowledgeExtractor.ReadUnlabeled(ml.Data.LoadFromEnumerable(rows), TaskTemplates.Rte));
        Assert.Equal("UnlabeledData row 1: column 'Text2' (the second text) is empty; template 'RTE' reads sentence pairs.", error.Message);

        // A single-text template reads the first text only; an empty Text2 column there is not read.
        var single = KnowledgeExtractor.ReadUnlabeled(ml.Data.LoadFromEnumerable(rows), TaskTemplates.Sst2);
        Assert.Equal([("The cat sat on the mat.", (string?)null), ("It rained all day.", null)], single);
    }
}
