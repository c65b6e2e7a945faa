// Golden ids from transformers.js (@huggingface/transformers 4.3.2, which runs @huggingface/tokenizers 0.2.0):
//   npm install @huggingface/transformers   (in a scratch folder outside the repository)
//   node golden.mjs qwen2-style/tokenizer.json qwen2-style/golden.json qwen2-style/golden.json
// The second file gives the texts: a JSON array of strings, or of {text, ids} objects (an existing golden file).
import { PreTrainedTokenizer } from '@huggingface/transformers';
import fs from 'fs';
const t = new PreTrainedTokenizer(JSON.parse(fs.readFileSync(process.argv[2])), {});
const texts = JSON.parse(fs.readFileSync(process.argv[3])).map(x => typeof x === 'string' ? x : x.text);
const cases = texts.map(text => ({ text, ids: t.encode(text, { add_special_tokens: false }) }));
fs.writeFileSync(process.argv[4], '[\n' + cases.map(c => JSON.stringify(c)).join(',\n') + '\n]\n');
