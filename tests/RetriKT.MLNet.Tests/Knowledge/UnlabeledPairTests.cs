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

        // A text of only characters the student's tokenizer drops encodes as an empty one: labelled and stored, it trained
        // the pair student on [CLS] a [SEP] [SEP], an input the runtime refuses. The few-shot rows, the unlabelled rows and
        // the extractor's Transform decide it alike (TaskTemplate.MissingText), each naming its rows.
        var zeroWidth = new[] { rows[0], new TextPairRow { Text = "It rained all day.", Text2 = "\u200B\u0301" } };
        var hidden = Assert.Throws<ArgumentException>(() => KnowledgeExtractor.ReadUnlabeled(ml.Data.LoadFromEnumerable(zeroWidth), TaskTemplates.Rte));
        Assert.StartsWith("UnlabeledData row 1: column 'Text2' (the second text) holds only characters the tokenizer drops", hidden.Message);
        var withoutFirst = new[] { rows[0], new TextPairRow { Text = " ", Text2 = "A cat is sitting." } };
        Assert.Equal("UnlabeledData row 1: column 'Text' is empty; expected a text for the teacher to label.",
            Assert.Throws<ArgumentException>(() => KnowledgeExtractor.ReadUnlabeled(ml.Data.LoadFromEnumerable(withoutFirst), TaskTemplates.Rte)).Message);
        var fewShot = new[] { new TextPairRow { Text = "The cat sat on the mat.", Text2 = "\u200B", Label = "entailment" } };
        Assert.StartsWith("Row 0: column 'Text2' (the second text) holds only characters the tokenizer drops",
            Assert.Throws<ArgumentException>(() => SoftPromptPpoTrainer.ReadExamples(ml.Data.LoadFromEnumerable(fewShot), TaskTemplates.Rte, "Label", ["entailment", "not_entailment"])).Message);

        // A single-text template reads the first text only; an empty Text2 column there is not read.
        var single = KnowledgeExtractor.ReadUnlabeled(ml.Data.LoadFromEnumerable(rows), TaskTemplates.Sst2);
        Assert.Equal([("The cat sat on the mat.", (string?)null), ("It rained all day.", null)], single);
    }
}
